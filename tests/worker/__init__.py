import pytest

# The helper module's asserts report the values they compared, as a test module's do.
pytest.register_assert_rewrite("tests.worker.helpers")
