"""Python values <-> quiver.v1 protobuf messages (ids, vectors, payloads, filters, selectors).

Client-side checks are limited to what cannot be encoded at all (a dict payload value, a
negative id, a float filter match ...): they raise InvalidArgument before anything is sent.
Everything the contract validates (dimension, NaN, UUID syntax, limits) is left to the server.
"""
import numbers
import uuid as _uuid

from .errors import InvalidArgument

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1
_FILTER_KEYS = frozenset(("must", "should", "must_not", "min_should"))
_RANGE_KEYS = ("gt", "gte", "lt", "lte")


def enum_name(enum_type, value, prefix):
    """METRIC_L2 -> "l2", INDEX_TYPE_HNSW_INT8 -> "hnsw-int8" (unknown numbers -> "<n>")."""
    try:
        name = enum_type.Name(value)
    except ValueError:
        return str(value)
    if name.startswith(prefix):
        name = name[len(prefix):]
    return name.lower().replace("_", "-")


def _is_id(x):
    return isinstance(x, (str, _uuid.UUID)) or (
        isinstance(x, numbers.Integral) and not isinstance(x, bool))


class Codec:
    """Conversions bound to one set of generated modules (see _stubs.load)."""

    def __init__(self, pb):
        self.pb = pb
        self.c = pb.common

    # -- ids ------------------------------------------------------------------------------------
    def point_id(self, x):
        """int (0 .. 2**64-1) -> PointId(num); str or uuid.UUID -> PointId(uuid)."""
        if isinstance(x, bool):
            raise InvalidArgument(f"point id must be an int or a UUID string, not {x!r}")
        if isinstance(x, numbers.Integral):
            x = int(x)
            if not 0 <= x <= UINT64_MAX:
                raise InvalidArgument(f"numeric point id {x} out of range 0..2**64-1")
            return self.c.PointId(num=x)
        if isinstance(x, _uuid.UUID):
            return self.c.PointId(uuid=str(x))
        if isinstance(x, str):
            return self.c.PointId(uuid=x)
        raise InvalidArgument(f"point id must be an int or a UUID string, not {type(x).__name__}")

    @staticmethod
    def id_value(pid):
        kind = pid.WhichOneof("kind")
        if kind == "num":
            return pid.num
        if kind == "uuid":
            return pid.uuid
        return None

    @staticmethod
    def id_key(x):
        """A hashable identity of a user id (UUIDs compare case-insensitively), for de-duping."""
        if isinstance(x, _uuid.UUID):
            return ("u", str(x))
        if isinstance(x, str):
            return ("u", x.lower())
        return ("n", x)

    # -- vectors --------------------------------------------------------------------------------
    def vector(self, v, what="vector"):
        """list/tuple/array('f')/numpy 1-D array (or any iterable of numbers) -> Vector."""
        if isinstance(v, (str, bytes, dict)) or v is None:
            raise InvalidArgument(f"{what} must be a sequence of numbers, not {type(v).__name__}")
        ndim = getattr(v, "ndim", None)
        if ndim is not None and ndim != 1:
            raise InvalidArgument(f"{what} must be one-dimensional, got an array of ndim {ndim}")
        data = v.tolist() if hasattr(v, "tolist") else v
        try:
            return self.c.Vector(data=data)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"{what}: {e}") from None

    @staticmethod
    def is_vector_like(v):
        return not _is_id(v) and v is not None and not isinstance(v, (bytes, dict))

    # -- payload --------------------------------------------------------------------------------
    def value(self, v, depth=0):
        """Python -> Value: None, bool, int (int64), float, str, list/tuple (nested)."""
        c = self.c
        if v is None:
            return c.Value(null_value=c.Null())
        if isinstance(v, bool):
            return c.Value(bool_value=v)
        if isinstance(v, numbers.Integral):
            v = int(v)
            if not INT64_MIN <= v <= INT64_MAX:
                raise InvalidArgument(f"payload integer {v} does not fit in int64")
            return c.Value(integer_value=v)
        if isinstance(v, numbers.Real):
            return c.Value(double_value=float(v))
        if isinstance(v, str):
            return c.Value(string_value=v)
        if isinstance(v, (list, tuple)):
            if depth >= 64:
                raise InvalidArgument("payload list nested too deeply")
            return c.Value(list_value=c.ListValue(values=[self.value(x, depth + 1) for x in v]))
        if hasattr(v, "tolist") and not isinstance(v, (bytes, dict)):  # numpy array or scalar
            return self.value(v.tolist(), depth)
        if isinstance(v, dict):
            raise InvalidArgument("payload values cannot be objects (dict); flatten them into "
                                  "top-level keys")
        raise InvalidArgument(f"unsupported payload value type {type(v).__name__}")

    def payload(self, d):
        """dict[str, value] -> Payload (None -> None: no payload)."""
        if d is None:
            return None
        if not isinstance(d, dict):
            raise InvalidArgument(f"payload must be a dict, not {type(d).__name__}")
        p = self.c.Payload()
        for k, v in d.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"payload keys must be strings, not {k!r}")
            p.fields[k].CopyFrom(self.value(v))
        return p

    @classmethod
    def py_value(cls, v):
        """Value -> Python (a Value with nothing set reads as None)."""
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            return v.string_value
        if kind == "integer_value":
            return v.integer_value
        if kind == "double_value":
            return v.double_value
        if kind == "bool_value":
            return v.bool_value
        if kind == "list_value":
            return [cls.py_value(x) for x in v.list_value.values]
        return None

    @classmethod
    def py_payload(cls, msg, present):
        if not present:
            return None
        return {k: cls.py_value(v) for k, v in msg.fields.items()}

    # -- points ---------------------------------------------------------------------------------
    def point(self, p):
        """(id, vector[, payload]) tuple, {"id","vector","payload"} dict or an object with
        id/vector/payload attributes (e.g. a Point read back) -> PointStruct."""
        if isinstance(p, dict):
            unknown = set(p) - {"id", "vector", "payload"}
            if unknown or "id" not in p or "vector" not in p:
                raise InvalidArgument("a point dict needs 'id' and 'vector' (and optionally "
                                      f"'payload'); got keys {sorted(p)}")
            pid, vec, pl = p["id"], p["vector"], p.get("payload")
        elif isinstance(p, (tuple, list)):
            if len(p) not in (2, 3):
                raise InvalidArgument("a point tuple is (id, vector) or (id, vector, payload), "
                                      f"got {len(p)} items")
            pid, vec, pl = p[0], p[1], (p[2] if len(p) == 3 else None)
        elif hasattr(p, "id") and hasattr(p, "vector"):
            pid, vec, pl = p.id, p.vector, getattr(p, "payload", None)
        else:
            raise InvalidArgument(f"cannot read a point from {type(p).__name__}")
        ps = self.c.PointStruct(id=self.point_id(pid), vector=self.vector(vec, f"point {pid!r}"))
        payload = self.payload(pl)
        if payload is not None:
            ps.payload.CopyFrom(payload)
        return ps

    # -- payload selector -----------------------------------------------------------------------
    def selector(self, wp):
        """True/False, a list of keys (include), or {"include": [...]} / {"exclude": [...]}."""
        c = self.c
        if wp is None or isinstance(wp, bool):
            return c.PayloadSelector(enable=bool(wp))
        if isinstance(wp, dict):
            if len(wp) != 1 or next(iter(wp)) not in ("include", "exclude"):
                raise InvalidArgument("with_payload dict must be {'include': [...]} or "
                                      "{'exclude': [...]}")
            (kind, keys), = wp.items()
            return c.PayloadSelector(**{kind: c.PayloadFields(fields=self._keys(keys))})
        return c.PayloadSelector(include=c.PayloadFields(fields=self._keys(wp)))

    @staticmethod
    def _keys(keys):
        if isinstance(keys, str):
            keys = [keys]
        keys = list(keys)
        if not all(isinstance(k, str) for k in keys):
            raise InvalidArgument("payload selector keys must be strings")
        return keys

    # -- filters --------------------------------------------------------------------------------
    def filters(self, f):
        """-> (Filter or None, filter_text). str: the server's text syntax; dict: see filter();
        a quiver.v1.Filter message passes through."""
        if f is None:
            return None, ""
        if isinstance(f, str):
            return None, f
        if isinstance(f, self.c.Filter):
            return f, ""
        if isinstance(f, dict):
            return self.filter(f), ""
        raise InvalidArgument(f"filter must be a str, a dict or a Filter, not {type(f).__name__}")

    def filter(self, d):
        """Dict form -> Filter.

        Structured: {"must": [cond...], "should": [...], "must_not": [...], "min_should": n}.
        Shorthand (no such key): {"field": value, ...} means every field matches its value
        (None: the field is null; a list: any of the values).
        """
        c = self.c
        if not isinstance(d, dict):
            raise InvalidArgument(f"filter must be a dict, not {type(d).__name__}")
        keys = set(d)
        if keys & _FILTER_KEYS:
            if keys - _FILTER_KEYS:
                raise InvalidArgument("a filter dict mixes must/should/must_not/min_should with "
                                      f"field names {sorted(keys - _FILTER_KEYS)}; put field "
                                      "conditions inside 'must'")
            f = c.Filter()
            for part in ("must", "should", "must_not"):
                conds = d.get(part) or []
                if isinstance(conds, dict):
                    conds = [conds]
                getattr(f, part).extend(self.condition(x) for x in conds)
            if d.get("min_should") is not None:
                ms = d["min_should"]
                if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
                    raise InvalidArgument(f"min_should must be a non-negative int, not {ms!r}")
                f.min_should = ms
            return f
        return c.Filter(must=[self.condition({"field": k, "match": v}) if v is not None
                              else self.condition({"is_null": k}) for k, v in d.items()])

    def condition(self, d):
        """One condition:
            {"field": "color", "match": "red"}          keyword (str), integer (int), bool;
            {"field": "color", "match": ["a", "b"]}     any of these strings / integers;
            {"field": "color", "except": ["a", "b"]}    none of them (missing field passes);
            {"field": "price", "range": {"gte": 1, "lt": 10}}   (or gt/gte/lt/lte inline);
            {"has_id": [1, "uuid", ...]}, {"is_empty": "field"}, {"is_null": "field"};
            {"must": [...], "should": [...], ...}       a nested filter.
        """
        c = self.c
        if not isinstance(d, dict):
            raise InvalidArgument(f"filter condition must be a dict, not {d!r}")
        if "field" in d:
            name = d["field"]
            if not isinstance(name, str):
                raise InvalidArgument(f"condition field must be a string, not {name!r}")
            rest = {k: v for k, v in d.items() if k != "field"}
            if set(rest) & set(_RANGE_KEYS) and "range" not in rest:
                rest = {"range": rest}
            if len(rest) != 1 or next(iter(rest)) not in ("match", "except", "range"):
                raise InvalidArgument(f"condition on {name!r} needs exactly one of 'match', "
                                      f"'except' or 'range', got {sorted(rest)}")
            (kind, v), = rest.items()
            if kind == "range":
                if not isinstance(v, dict) or not v or set(v) - set(_RANGE_KEYS):
                    raise InvalidArgument(f"range on {name!r} takes gt/gte/lt/lte, got {v!r}")
                r = c.FieldRange(field=name)
                for k, bound in v.items():
                    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
                        raise InvalidArgument(f"range bound {k} on {name!r} must be a number")
                    setattr(r, k, float(bound))
                return c.Condition(range=r)
            return c.Condition(match=self._match(name, v, kind == "except"))
        if "has_id" in d and len(d) == 1:
            ids = d["has_id"]
            ids = [ids] if _is_id(ids) else list(ids)
            return c.Condition(has_id=c.HasId(ids=[self.point_id(x) for x in ids]))
        for kind, msg in (("is_empty", c.IsEmpty), ("is_null", c.IsNull)):
            if kind in d and len(d) == 1:
                if not isinstance(d[kind], str):
                    raise InvalidArgument(f"{kind} takes a field name, not {d[kind]!r}")
                return c.Condition(**{kind: msg(field=d[kind])})
        if d and set(d) <= _FILTER_KEYS:
            return c.Condition(nested=self.filter(d))
        raise InvalidArgument(f"unrecognised filter condition {d!r}")

    def _match(self, name, v, negate):
        c = self.c
        if isinstance(v, (list, tuple, set, frozenset)):
            vals = list(v)
            if all(isinstance(x, str) for x in vals):
                kind = "except_keywords" if negate else "keywords"
                return c.FieldMatch(field=name, **{kind: c.KeywordList(values=vals)})
            if all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in vals):
                kind = "except_integers" if negate else "integers"
                return c.FieldMatch(field=name,
                                    **{kind: c.IntegerList(values=[int(x) for x in vals])})
            raise InvalidArgument(f"match list on {name!r} must be all strings or all integers")
        if negate:
            return self._match(name, [v], True)
        if isinstance(v, bool):
            return c.FieldMatch(field=name, boolean=v)
        if isinstance(v, numbers.Integral):
            return c.FieldMatch(field=name, integer=int(v))
        if isinstance(v, str):
            return c.FieldMatch(field=name, keyword=v)
        raise InvalidArgument(f"cannot match {name!r} against {v!r} (str, int, bool or a list of "
                              "them; use a range for floats)")
