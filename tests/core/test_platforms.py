import pytest

from forge.core.errors import PlatformError
from forge.core.platforms import Platform, from_oci, host_platform, parse_platform


@pytest.mark.parametrize("text, expected", [
    ("amd64", "linux/amd64"), ("x86_64", "linux/amd64"), ("linux/amd64", "linux/amd64"),
    ("aarch64", "linux/arm64/v8"), ("arm64", "linux/arm64/v8"), ("arm64/v8", "linux/arm64/v8"),
    ("linux/arm64", "linux/arm64/v8"), ("linux/arm64/v8", "linux/arm64/v8"),
    ("armv7", "linux/arm/v7"), ("armhf", "linux/arm/v7"), ("arm/v7", "linux/arm/v7"),
    ("linux/arm/v7", "linux/arm/v7"), ("i386", "linux/386"), ("386", "linux/386"),
    ("riscv64", "linux/riscv64"), ("AARCH64", "linux/arm64/v8"),
])
def test_aliases_normalize_to_one_value(text, expected):
    assert str(parse_platform(text)) == expected


def test_spellings_for_other_tools():
    arm = parse_platform("armhf")
    assert (arm.short, arm.debian_arch, arm.qemu_arch, arm.uname_machine) == ("armv7", "armhf", "arm", "armv7l")
    a64 = parse_platform("arm64")
    assert (a64.short, a64.debian_arch, a64.qemu_arch) == ("aarch64", "arm64", "aarch64")
    assert a64.oci() == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert parse_platform("amd64").oci() == {"architecture": "amd64", "os": "linux"}


def test_unknown_platform_suggests_nearest():
    with pytest.raises(PlatformError, match="did you mean 'aarch64'"):
        parse_platform("aarch46")
    with pytest.raises(PlatformError, match="unknown platform"):
        parse_platform("linux/arm64/v7")


def test_from_oci_fills_implied_variants_and_host():
    assert from_oci("arm64") == Platform("linux", "arm64", "v8")
    assert from_oci("arm") == Platform("linux", "arm", "v7")
    assert isinstance(host_platform(), Platform)


def test_platform_enters_only_keys_of_actions_that_have_one(forge_workspace):
    """The same layer target built with --platform amd64 and arm64 is one cache entry;
    an image (which has a platform) is two."""
    ws = forge_workspace({"p/BUILD": 'layer(name = "l", srcs = ["f"])\nimage(name = "i", layers = [":l"])\n',
                          "p/f": "x"})
    a = ws.run("build", "//p:all", "--json", "--platform", "amd64").assert_success()
    b = ws.run("build", "//p:all", "--json", "--platform", "aarch64").assert_success()
    assert b.statuses()["//p:l#Layer.0"] == "cached-local"
    assert b.statuses()["//p:i#Image.0"] == "built"
    assert a.statuses()["//p:i#Image.0"] == "built"
