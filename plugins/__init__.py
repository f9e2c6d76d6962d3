"""autodl's built-in architecture plugins, installed as ``autodl.plugins``.

Each module is one KerasTuner-style hypermodel: fixed task facts in ``__init__``,
tuned values declared inline in ``build(hp)``. They are registered through the
``autodl.plugins`` entry-point group, exactly like third-party plugins.
"""
