import pytest

# The helper modules' asserts report the values they compared, as a test module's do.
pytest.register_assert_rewrite("tests.console.helpers", "tests.console.admin_helpers")
