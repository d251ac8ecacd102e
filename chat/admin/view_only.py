"""A mixin for admin pages that show records and must change none (transcripts, the change
log)."""

from django.http import HttpRequest


class ViewOnly:
    """Admin pages (and inlines) that show rows and change none: no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
