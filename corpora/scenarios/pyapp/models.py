"""Classes whose instances the coreheap scenarios count.

Every class here is distinctive on purpose: the census key of an instance is
"pyapp.models.<qualname>", e.g. "pyapp.models.Outer.Inner".
"""


class Response(object):
    """A plain class: instances have a __dict__ (or inline values on 3.11+)."""

    def __init__(self, ident, path, status):
        self.ident = ident
        self.path = path
        self.status = status


class Point(object):
    """A __slots__ class: no __dict__."""

    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y


class Outer(object):
    class Inner(object):
        """Nested: qualname "Outer.Inner"."""

        def __init__(self, tag):
            self.tag = tag


class Registry(dict):
    """A dict subclass."""


class LeakedResponse(object):
    """What py_leak.py leaks: one per request, kept in a module-level list."""

    def __init__(self, request_no, body, headers):
        self.request_no = request_no
        self.body = body
        self.headers = headers
