# Shared fixture modules, available to every test folder.
pytest_plugins = ["tests.support.tiny_models", "tests.support.stores"]
