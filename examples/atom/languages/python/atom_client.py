"""atom_client: a stand-in for the Atom Python client, enough to say what is installed."""

import platform
import sys

__version__ = "0.1.0"


def main():
    try:  # atom builds on any flavor; extras is optional
        import atom_extras

        extras = atom_extras.describe()
    except ImportError:
        extras = "no extras"
    print(f"atom {__version__} on {platform.machine()}, python {sys.version.split()[0]}, {extras}")


if __name__ == "__main__":
    main()
