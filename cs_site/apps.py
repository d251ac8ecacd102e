from django.contrib.staticfiles.apps import StaticFilesConfig


class DeskStaticFilesConfig(StaticFilesConfig):
    """Static files without the browser code's ES module sources (static/*/src/): esbuild
    bundles them into the files beside them (scripts/build-static.sh), and only those bundles
    are linked. `collectstatic` leaves the sources out of STATIC_ROOT; with DEBUG, Django's own
    handler still serves them from the source folders."""

    ignore_patterns = [*StaticFilesConfig.ignore_patterns, "*/src/*"]
