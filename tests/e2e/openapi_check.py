"""Checks real chatd responses and SSE events against docs/openapi.yaml.

The harness calls `check_response` for every HTTP response it reads and
`check_event` for every SSE event it parses (unless a caller talks to another
server and says so), so a route, status, field or event that the document does
not describe fails the test that met it:

- the path must match a path template (else only the document's 404 for an
  unmatched path is allowed), the method one of its operations (else 405, or 204
  for the OPTIONS preflight);
- the status must be one the operation lists, or one any request may get before
  it is routed (`x-connection-responses`);
- the body must have a documented media type and, for JSON, validate against the
  response's schema (JSON Schema 2020-12, the dialect of OpenAPI 3.1); documented
  headers that are present must match, required ones must be there;
- an SSE event's name must be one of `x-sse-events` and its data validate
  against that event's schema.

Uses Debian's python3-yaml and python3-jsonschema (scripts/install-deps.sh).
"""

import atexit
import collections
import json
import os
import re
import sys
import threading

import jsonschema
import yaml

SPEC_PATH = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                                          "openapi.yaml"))
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class OpenApiMismatch(AssertionError):
    pass


def _media_type(value):
    return (value or "").split(";", 1)[0].strip().lower()


class OpenApi:
    def __init__(self, path=SPEC_PATH):
        with open(path, "rb") as f:
            self.raw = f.read()
        self.doc = yaml.safe_load(self.raw)
        if not str(self.doc.get("openapi", "")).startswith("3.1"):
            raise OpenApiMismatch("%s is not an OpenAPI 3.1 document" % path)
        self._validators = {}
        self._lock = threading.Lock()
        self._paths = []
        for template, item in self.doc["paths"].items():
            # A path parameter is one segment, possibly empty: chatd routes /api/chat//cancel to the cancel
            # route and answers 400 for the empty id, so the template must match it too.
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]*", re.escape(template)) + "$"
            self._paths.append((template, re.compile(rx), item))
        events = self.resolve(self.doc["paths"]["/api/sse"]["get"]["responses"]["200"])["x-sse-events"]
        self.sse_events = {name: self.resolve(s) for name, s in events.items()}

    # -- references and schemas ------------------------------------------------
    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node and len(node) == 1:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise OpenApiMismatch("only local references are supported: %s" % ref)
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            seen += 1
            if seen > 20:
                raise OpenApiMismatch("reference loop at %s" % ref)
        return node

    def validator(self, schema):
        key = id(schema)
        with self._lock:
            v = self._validators.get(key)
            if v is None:
                # The schema sits in a root that carries the components, so its #/components/... references
                # resolve inside the document.
                root = {"$schema": _DIALECT, "components": self.doc.get("components", {}), "allOf": [schema]}
                cls = jsonschema.Draft202012Validator
                checker = getattr(cls, "FORMAT_CHECKER", None) or jsonschema.FormatChecker()
                cls.check_schema(root)
                v = cls(root, format_checker=checker)
                self._validators[key] = (v, schema)
            else:
                v = v[0]
        return v

    def validate(self, schema, instance, where):
        errors = sorted(self.validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            lines = []
            for e in errors[:5]:
                at = "/".join(str(p) for p in e.absolute_path) or "(root)"
                lines.append("  at %s: %s" % (at, e.message[:300]))
            body = json.dumps(instance)[:600]
            raise OpenApiMismatch("openapi: %s does not match docs/openapi.yaml:\n%s\n  instance: %s"
                                  % (where, "\n".join(lines), body))

    # -- lookups ----------------------------------------------------------------
    def match_path(self, path):
        for template, rx, item in self._paths:
            if rx.match(path):
                return template, item
        return None, None

    def candidates(self, method, path, status):
        """(description, response object) pairs that may describe this answer."""
        method = method.lower()
        key = str(status)
        out = []
        template, item = self.match_path(path) if path is not None else (None, None)
        if path is not None and item is None:
            out += [("unmatched path %s" % path, r) for r in self._status(self.doc.get("x-unmatched-path", {}), key)]
        elif item is not None:
            op = item.get(method)
            if op is None and method == "head":
                op = item.get("get")
            if op is not None:
                out += [("%s %s" % (method.upper(), template), r) for r in self._status(op.get("responses", {}), key)]
            elif method == "options":
                out += [("preflight %s" % template, r) for r in self._status(self.doc.get("x-preflight", {}), key)]
            else:
                out += [("%s %s (method not listed)" % (method.upper(), template), r)
                        for r in self._status(self.doc.get("x-unmatched-method", {}), key)]
        if path is not None and item is None and method == "options":
            out += [("preflight %s" % path, r) for r in self._status(self.doc.get("x-preflight", {}), key)]
        out += [("any request", r) for r in self._status(self.doc.get("x-connection-responses", {}), key)]
        return template, out

    def _status(self, responses, key):
        found = []
        for k in (key, key[0] + "XX", "default"):
            if k in responses:
                found.append(self.resolve(responses[k]))
                break
        return found

    # -- checks -----------------------------------------------------------------
    def check_response(self, method, target, status, headers, body, body_expected=True):
        """headers: list of (lower-case name, value). body_expected: False for HEAD and an SSE head."""
        path = None if target is None else target.split("?", 1)[0]
        template, cands = self.candidates(method, path, status)
        what = "%s %s -> %s" % (method, target if target is not None else "(raw request)", status)
        if not cands:
            raise OpenApiMismatch("openapi: %s: status %s is not documented for %s" %
                                  (what, status, template or "this path"))
        failures = []
        for desc, resp in cands:
            try:
                self._check_one(resp, what + " [" + desc + "]", headers, body, body_expected)
                checked["%s %s" % (desc, status)] += 1
                return
            except OpenApiMismatch as e:
                failures.append(str(e))
        raise OpenApiMismatch("\n".join(failures))

    def _check_one(self, resp, what, headers, body, body_expected):
        hmap = {}
        for k, v in headers:
            hmap.setdefault(k.lower(), v)
        for name, h in (resp.get("headers") or {}).items():
            h = self.resolve(h)
            value = hmap.get(name.lower())
            if value is None:
                if h.get("required"):
                    raise OpenApiMismatch("openapi: %s: header %s is required" % (what, name))
                continue
            if "schema" in h:
                self.validate(h["schema"], value, "%s header %s" % (what, name))
        content = resp.get("content")
        ctype = _media_type(hmap.get("content-type"))
        if not content:
            if body:
                raise OpenApiMismatch("openapi: %s: no body is documented, got %r" % (what, body[:200]))
            return
        if ctype not in content:
            raise OpenApiMismatch("openapi: %s: Content-Type %r is not one of %s" % (what, ctype, sorted(content)))
        if not body_expected:
            return
        media = content[ctype]
        if ctype == "application/json" or ctype.endswith("+json"):
            try:
                instance = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise OpenApiMismatch("openapi: %s: body is not JSON (%s): %r" % (what, e, body[:200]))
            if "schema" in media:
                self.validate(media["schema"], instance, what)
        elif ctype == "application/yaml":
            try:
                yaml.safe_load(body.decode("utf-8"))
            except (UnicodeDecodeError, yaml.YAMLError) as e:
                raise OpenApiMismatch("openapi: %s: body is not YAML (%s)" % (what, e))

    def check_event(self, event, data, where="GET /api/sse"):
        schema = self.sse_events.get(event)
        if schema is None:
            raise OpenApiMismatch("openapi: %s: event %r is not one of x-sse-events %s" %
                                  (where, event, sorted(self.sse_events)))
        try:
            instance = json.loads(data)
        except ValueError as e:
            raise OpenApiMismatch("openapi: %s: event %r data is not JSON (%s): %r" % (where, event, e, data[:200]))
        self.validate(schema, instance, "%s event %r" % (where, event))
        checked["event %s" % event] += 1


_spec = None
_spec_lock = threading.Lock()
# What was validated in this process: "<operation or case> <status>" and "event <name>" -> count.
checked = collections.Counter()


def _summary():
    if os.environ.get("OPENAPI_CHECK_SUMMARY") == "1" and checked:
        sys.stderr.write("openapi_check: validated\n")
        for key in sorted(checked):
            sys.stderr.write("  %6d  %s\n" % (checked[key], key))


atexit.register(_summary)


def spec():
    global _spec
    with _spec_lock:
        if _spec is None:
            _spec = OpenApi()
        return _spec


def check_response(method, target, response, body_expected=None):
    """response: harness.Response (status, headers, body). Raises OpenApiMismatch."""
    if body_expected is None:
        body_expected = method.upper() != "HEAD"
    spec().check_response(method, target, response.status, response.headers, response.body, body_expected)


def check_event(event, data, where="GET /api/sse"):
    spec().check_event(event, data, where)
