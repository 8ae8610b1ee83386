"""The built-in rules (``forge.rules``): one module per rule family, each in the fixed
order DOC, attribute schema, analysis, then the ``run`` functions of its actions.
``builtin`` registers them all through the same hook third-party plugins use.
"""
