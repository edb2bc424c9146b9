"""The Quiver client: one gRPC channel, one method per public RPC, plain Python in and out."""
import numbers

from . import _stubs
from ._convert import Codec, enum_name
from .errors import InvalidArgument, QuiverError, error_from_rpc
from .models import CollectionInfo, Member, NodeStatus, Point, ScoredPoint, WriteResult

__all__ = ["Client", "MAX_POINTS_PER_REQUEST", "MAX_IDS_PER_REQUEST", "MAX_BATCH_QUERIES",
           "DEFAULT_MAX_MESSAGE_BYTES"]

#: Contract limits (common.proto, points.proto).
MAX_POINTS_PER_REQUEST = 10_000
MAX_IDS_PER_REQUEST = 10_000
MAX_BATCH_QUERIES = 1_024
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
#: Room left in every request for fields other than the points (collection name, flags).
_REQUEST_OVERHEAD = 64 << 10

_METRICS = {"l2": "METRIC_L2", "cosine": "METRIC_COSINE", "dot": "METRIC_DOT"}
_INDEXES = {"hnsw": "INDEX_TYPE_HNSW", "hnsw-int8": "INDEX_TYPE_HNSW_INT8",
            "flat": "INDEX_TYPE_FLAT", "ivf-flat": "INDEX_TYPE_IVF_FLAT",
            "ivf-pq": "INDEX_TYPE_IVF_PQ"}
_STRATEGIES = {"average": "RECOMMEND_STRATEGY_AVERAGE_VECTOR",
               "average-vector": "RECOMMEND_STRATEGY_AVERAGE_VECTOR",
               "best": "RECOMMEND_STRATEGY_BEST_SCORE",
               "best-score": "RECOMMEND_STRATEGY_BEST_SCORE"}
_STATUS_RANK = {"committed": 0, "applied": 1}


def _varint_len(n):
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _choice(value, table, what):
    key = str(value).lower().replace("_", "-") if isinstance(value, str) else value
    if key not in table:
        raise InvalidArgument(f"unknown {what} {value!r}; expected one of {', '.join(table)}")
    return table[key]


def _count(value, what, allow_none=True):
    """A non-negative int parameter (None: unset, sent as 0 = server default)."""
    if value is None and allow_none:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative int, not {value!r}")
    if value > 0xFFFFFFFF:
        raise InvalidArgument(f"{what} {value} is out of range")
    return int(value)


def _ids_list(ids):
    """A single id or an iterable of ids -> list."""
    if isinstance(ids, (str, numbers.Integral)) and not isinstance(ids, bool):
        return [ids]
    if ids is None:
        raise InvalidArgument("ids must be an id or an iterable of ids, not None")
    if hasattr(ids, "hex") and hasattr(ids, "int") and hasattr(ids, "urn"):  # uuid.UUID
        return [ids]
    return list(ids)


class Client:
    """A connection to a Quiver server (quiver-router or quiver-node --dev).

    Args:
        target: ``HOST:PORT``, ``[IPv6]:PORT`` or a gRPC URI such as ``dns:///host:port``.
        timeout: seconds allowed for each call (None: no deadline). Calls that the client splits
            into several requests (upsert, get, delete, search_batch) apply it per request.
        tls: connect over TLS (implied by ca, cert or key).
        ca: PEM file of the CA certificates to trust (default: the system roots).
        cert, key: PEM certificate chain and private key, for servers that require client
            certificates (both or neither).
        stubs_dir: directory of the generated Python stubs (``<build>/python``); default: the
            ``QUIVER_PY_STUBS`` environment variable, else ``build/python`` at the repository
            root. ImportError (naming the places searched) when none is found.
        max_message_bytes: the server's gRPC message size limit (``--max-message-mb``); upserts
            are split to stay under it and it bounds what this client sends and accepts.

    The connection is made lazily: an unreachable server shows up as :class:`Unavailable` on the
    first call. A client is safe to share between threads. Use it as a context manager, or call
    :meth:`close`, to release the channel.

    Every failure raises :class:`~quiver_client.QuiverError` (or a subclass such as
    :class:`~quiver_client.NotFound`); arguments that cannot be encoded raise
    :class:`~quiver_client.InvalidArgument` before anything is sent.
    """

    def __init__(self, target="127.0.0.1:7070", timeout=10.0, tls=False, ca=None, cert=None,
                 key=None, stubs_dir=None, *, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        import grpc  # Debian's python3-grpcio

        self._grpc = grpc
        self.pb = _stubs.load(stubs_dir)
        self._codec = Codec(self.pb)
        self.target = target
        self.timeout = timeout
        if max_message_bytes < (1 << 20):
            raise InvalidArgument("max_message_bytes must be at least 1 MiB")
        self.max_message_bytes = int(max_message_bytes)
        options = [("grpc.max_send_message_length", self.max_message_bytes),
                   ("grpc.max_receive_message_length", self.max_message_bytes)]
        if (cert is None) != (key is None):
            raise InvalidArgument("cert and key go together (client certificate and its key)")
        if tls or ca or cert or key:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self._collections = self.pb.collections_grpc.CollectionsStub(self.channel)
        self._points = self.pb.points_grpc.PointsStub(self.channel)
        self._cluster = self.pb.cluster_grpc.ClusterStub(self.channel)

    # -- plumbing -------------------------------------------------------------------------------
    def close(self):
        """Closes the channel; the client cannot be used afterwards."""
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Client({self.target!r})"

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise error_from_rpc(e) from None

    def _build(self, ctor, **fields):
        """Constructs a message; protobuf's own type/range errors become InvalidArgument."""
        try:
            return ctor(**fields)
        except (TypeError, ValueError) as e:
            raise InvalidArgument(str(e)) from None

    # -- health and cluster ---------------------------------------------------------------------
    def health(self, service=""):
        """grpc.health.v1.Health/Check: True when the server reports SERVING for ``service``
        ("" = the whole server, or e.g. "quiver.v1.Points"), False otherwise. An unknown service
        raises NotFound; an unreachable server raises Unavailable."""
        h = self.pb.health
        if h is None:
            raise QuiverError("UNIMPLEMENTED", "grpc/health/v1/health_pb2.py is missing from the "
                                               f"stubs directory {self.pb.directory}")
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=h.HealthCheckRequest.SerializeToString,
            response_deserializer=h.HealthCheckResponse.FromString)
        resp = self._call(check, h.HealthCheckRequest(service=service))
        return resp.status == h.HealthCheckResponse.SERVING

    def status(self):
        """Cluster.Status: the answering process's own view, as a NodeStatus."""
        r = self._call(self._cluster.Status, self.pb.cluster.ClusterStatusRequest())
        return NodeStatus(
            node_id=r.node_id, version=r.version,
            mode=enum_name(self.pb.cluster.NodeMode, r.mode, "NODE_MODE_"), healthy=r.healthy,
            status_message=r.status_message, uptime_ms=r.uptime_ms,
            started_at_unix_ms=r.started_at_unix_ms, grpc_address=r.grpc_address,
            gossip_address=r.gossip_address, data_dir=r.data_dir,
            members_alive=r.members_alive, members_total=r.members_total,
            collections=r.collections, meta_leader_id=r.meta_leader_id, meta_term=r.meta_term,
            shards_total=r.shards_total, shards_leaderless=r.shards_leaderless, raw=r)

    def members(self, include_left=False):
        """Cluster.Members: every member known to gossip (sorted by id), as Member objects."""
        cl = self.pb.cluster
        r = self._call(self._cluster.Members, cl.ClusterMembersRequest(include_left=include_left))
        out = []
        for m in r.members:
            ld = m.load
            out.append(Member(
                id=m.id, role=enum_name(cl.NodeMode, m.role, "NODE_MODE_"),
                state=enum_name(cl.MemberState, m.state, "MEMBER_STATE_"),
                grpc_address=m.grpc_address, gossip_address=m.gossip_address,
                incarnation=m.incarnation, last_update_age_ms=m.last_update_age_ms,
                version=m.version, draining=m.draining, is_self=m.is_self,
                load={f.name: getattr(ld, f.name) for f in ld.DESCRIPTOR.fields}, raw=m))
        return out

    # -- collections ----------------------------------------------------------------------------
    def _info(self, info, created=None):
        c = self.pb.common
        cfg = info.config
        ix = cfg.index
        kind = enum_name(c.IndexType, ix.type, "INDEX_TYPE_")
        hnsw = kind in ("hnsw", "hnsw-int8", "unspecified")
        ivf = kind in ("ivf-flat", "ivf-pq")
        return CollectionInfo(
            name=cfg.name, dim=cfg.dimension, metric=enum_name(c.Metric, cfg.metric, "METRIC_"),
            index=kind, shards=cfg.shard_count, replication=cfg.replication_factor,
            status=enum_name(self.pb.collections.CollectionStatus, info.status,
                             "COLLECTION_STATUS_"),
            status_message=info.status_message, points_count=info.points_count,
            indexed_points_count=info.indexed_points_count, memory_bytes=info.memory_bytes,
            disk_bytes=info.disk_bytes,
            m=ix.hnsw.m if hnsw else None,
            ef_construction=ix.hnsw.ef_construction if hnsw else None,
            ef_search=ix.hnsw.ef_search if hnsw else None,
            nlist=ix.ivf.nlist if ivf else None, nprobe=ix.ivf.nprobe if ivf else None,
            training_sample=ix.ivf.training_sample if ivf else None,
            on_disk_payload=cfg.on_disk_payload, created_at_unix_ms=cfg.created_at_unix_ms,
            uid=cfg.uid, created=created, raw=info)

    def create_collection(self, name, dim, metric="l2", index="hnsw", m=None,
                          ef_construction=None, ef_search=None, nlist=None, nprobe=None,
                          training_sample=None, shards=None, replication=None,
                          if_not_exists=False):
        """Creates a collection; returns its CollectionInfo (defaults filled in).

        Args:
            name: 1..64 characters of [A-Za-z0-9_-], starting with a letter or digit.
            dim: vector dimension, 1..65,536.
            metric: "l2" (squared Euclidean), "cosine" or "dot" (negated inner product).
            index: "hnsw" (default), "hnsw-int8", "flat" (exact scan), "ivf-flat" (or "ivf-pq").
            m, ef_construction, ef_search: HNSW parameters (hnsw, hnsw-int8 only).
            nlist, nprobe, training_sample: IVF parameters (ivf-flat, ivf-pq only).
            shards: number of shards (default 1); replication: replicas per shard (default:
                the server's).
            if_not_exists: succeed (``created`` False) when an identical collection exists.

        Parameters left None take the server's defaults; parameters for another index type
        than ``index`` are rejected by the server. Raises AlreadyExists, InvalidArgument,
        FailedPrecondition (too few nodes for ``replication``).
        """
        c = self.pb.common
        idx = self._build(c.IndexConfig,
                          type=c.IndexType.Value(_choice(index, _INDEXES, "index type")))
        if (m, ef_construction, ef_search) != (None, None, None):
            idx.hnsw.CopyFrom(c.HnswParams(m=_count(m, "m"),
                                           ef_construction=_count(ef_construction,
                                                                  "ef_construction"),
                                           ef_search=_count(ef_search, "ef_search")))
        if (nlist, nprobe, training_sample) != (None, None, None):
            idx.ivf.CopyFrom(c.IvfParams(nlist=_count(nlist, "nlist"),
                                         nprobe=_count(nprobe, "nprobe"),
                                         training_sample=_count(training_sample,
                                                                "training_sample")))
        req = self._build(
            self.pb.collections.CreateCollectionRequest, name=name,
            dimension=_count(dim, "dim", allow_none=False),
            metric=c.Metric.Value(_choice(metric, _METRICS, "metric")), index=idx,
            shard_count=_count(shards, "shards"), replication_factor=_count(replication,
                                                                            "replication"),
            if_not_exists=bool(if_not_exists))
        r = self._call(self._collections.Create, req)
        return self._info(r.info, created=r.created)

    def describe(self, name):
        """A collection's configuration, status and sizes (CollectionInfo). Raises NotFound."""
        r = self._call(self._collections.Describe,
                       self._build(self.pb.collections.DescribeCollectionRequest, name=name))
        return self._info(r.info)

    def list_collections(self, with_info=False):
        """Collection names, sorted; with_info=True: a list of CollectionInfo instead."""
        r = self._call(self._collections.List,
                       self.pb.collections.ListCollectionsRequest(with_info=bool(with_info)))
        if with_info:
            return [self._info(i) for i in r.infos]
        return list(r.names)

    def drop(self, name, if_exists=False):
        """Drops a collection (irreversible). Returns True when one was dropped; a missing
        collection raises NotFound, or returns False with if_exists=True."""
        r = self._call(self._collections.Drop,
                       self._build(self.pb.collections.DropCollectionRequest, name=name,
                                   if_exists=bool(if_exists)))
        return r.dropped

    # -- writes ---------------------------------------------------------------------------------
    def _chunks(self, structs, limit):
        """Groups PointStructs into requests of at most `limit` points and the byte budget."""
        budget = self.max_message_bytes - _REQUEST_OVERHEAD
        chunk, size = [], 0
        for ps in structs:
            n = ps.ByteSize()
            n += 1 + _varint_len(n)
            if chunk and (len(chunk) >= limit or size + n > budget):
                yield chunk
                chunk, size = [], 0
            chunk.append(ps)
            size += n
        if chunk:
            yield chunk

    def _fold(self, acc, resp):
        res = resp.result
        status = enum_name(self.pb.common.UpdateStatus, res.status, "UPDATE_STATUS_")
        if acc.status is None or _STATUS_RANK.get(status, -1) < _STATUS_RANK.get(acc.status, -1):
            acc.status = status
        acc.requests += 1
        acc.operation_ids.append(res.operation_id)
        for s in res.shards:
            acc.points += s.points
            acc.log_index = max(acc.log_index, s.log_index)
        acc.took_us += resp.took_us
        acc.raw = resp

    def _send_upserts(self, collection, chunks, wait, acc, progress=None):
        P = self.pb.points
        try:
            for chunk in chunks:  # upsert_many converts points while iterating
                req = P.UpsertPointsRequest(collection=collection, points=chunk, wait=bool(wait))
                self._fold(acc, self._call(self._points.Upsert, req))
                if progress is not None:
                    progress(acc.points)
        except QuiverError as e:
            e.partial = acc  # what earlier requests wrote before the failure
            raise
        return acc

    def upsert(self, collection, points, wait=False):
        """Inserts or replaces points; returns a WriteResult.

        ``points`` is an iterable of ``(id, vector)`` / ``(id, vector, payload)`` tuples or
        ``{"id": ..., "vector": ..., "payload": ...}`` dicts (Point objects work too). Ids are
        ints (0..2**64-1) or UUID strings; vectors lists, tuples, ``array('f')`` or numpy
        arrays; payloads dicts of str/int/float/bool/None/list values (None: empty payload).

        Every point is converted (and client-side checked) before anything is sent. The points
        then go out in as many requests as needed to respect 10,000 points and the message size
        limit per request. Each request is atomic per shard, but the split is not: if a later
        request fails, the raised QuiverError carries ``.partial``, the WriteResult of the
        requests that succeeded (upserts are idempotent, so retrying the whole call is safe).
        wait=True returns only once the points are visible to searches. An empty ``points``
        sends nothing.
        """
        structs = [self._codec.point(p) for p in points]
        return self._send_upserts(collection, self._chunks(structs, MAX_POINTS_PER_REQUEST),
                                  wait, WriteResult())

    def upsert_many(self, collection, points, batch=1000, progress=None, wait=False):
        """Streams points from any iterable (e.g. a generator reading a file) in batches.

        Points are converted as they are consumed and sent ``batch`` at a time (at most 10,000,
        fewer when the message size limit requires), so memory stays bounded. After each request
        ``progress(points_written_so_far)`` is called if given. Returns the summed WriteResult;
        on failure the QuiverError carries ``.partial`` as in :meth:`upsert`.
        """
        batch = _count(batch, "batch", allow_none=False)
        if not 1 <= batch <= MAX_POINTS_PER_REQUEST:
            raise InvalidArgument(f"batch must be 1..{MAX_POINTS_PER_REQUEST}, not {batch}")
        structs = (self._codec.point(p) for p in points)
        return self._send_upserts(collection, self._chunks(structs, batch), wait, WriteResult(),
                                  progress)

    def delete(self, collection, ids=None, filter=None, wait=False):
        """Deletes points by id (an id or an iterable of ids; missing ids are not an error) or
        by filter (text or dict, see :meth:`search`); exactly one of the two. An empty filter is
        refused by the server (drop the collection instead). Returns a WriteResult whose
        ``points`` counts deleted points (for a filter, only when wait=True)."""
        P = self.pb.points
        if (ids is None) == (filter is None):
            raise InvalidArgument("delete takes ids or a filter (exactly one)")
        acc = WriteResult()
        if ids is not None:
            keys, pids = set(), []
            for x in _ids_list(ids):
                k = self._codec.id_key(x)
                if k not in keys:
                    keys.add(k)
                    pids.append(self._codec.point_id(x))
            for i in range(0, len(pids), MAX_IDS_PER_REQUEST):
                req = P.DeletePointsRequest(
                    collection=collection, wait=bool(wait),
                    ids=self.pb.common.PointIdList(ids=pids[i:i + MAX_IDS_PER_REQUEST]))
                try:
                    self._fold(acc, self._call(self._points.Delete, req))
                except QuiverError as e:
                    e.partial = acc
                    raise
            return acc
        flt, text = self._codec.filters(filter)
        req = P.DeletePointsRequest(collection=collection, wait=bool(wait), filter_text=text)
        if flt is not None:
            req.filter.CopyFrom(flt)
        self._fold(acc, self._call(self._points.Delete, req))
        return acc

    # -- reads ----------------------------------------------------------------------------------
    def _points_out(self, msgs, selector, with_vectors, scored):
        want = selector.WhichOneof("selector") is not None and not (
            selector.WhichOneof("selector") == "enable" and not selector.enable)
        out = []
        decode = self._codec.py_payload
        for p in msgs:
            payload = decode(p.payload, True) if (want or p.HasField("payload")) else None
            vec = list(p.vector.data) if with_vectors and p.HasField("vector") else None
            pid = self._codec.id_value(p.id)
            if scored:
                out.append(ScoredPoint(id=pid, distance=p.distance, payload=payload, vector=vec,
                                       version=p.version, shard_id=p.shard_id, raw=p))
            else:
                out.append(Point(id=pid, vector=vec, payload=payload, version=p.version,
                                 shard_id=p.shard_id, raw=p))
        return out

    def get(self, collection, ids, with_payload=True, with_vectors=False):
        """Points by id (an id or an iterable of ids), in the order of their first occurrence;
        ids that do not exist are left out. Returns a list of Point (``payload`` a dict when
        requested, ``vector`` a list of floats with with_vectors=True). with_payload may also
        be a list of keys to return, or {"exclude": [keys]}. More than 10,000 ids are fetched in
        several requests."""
        P = self.pb.points
        sel = self._codec.selector(with_payload)
        keys, pids = set(), []
        for x in _ids_list(ids):
            k = self._codec.id_key(x)
            if k not in keys:
                keys.add(k)
                pids.append(self._codec.point_id(x))
        out = []
        for i in range(0, len(pids), MAX_IDS_PER_REQUEST):
            req = P.GetPointsRequest(collection=collection, ids=pids[i:i + MAX_IDS_PER_REQUEST],
                                     with_payload=sel, with_vectors=bool(with_vectors))
            r = self._call(self._points.Get, req)
            out.extend(self._points_out(r.points, sel, with_vectors, scored=False))
        return out

    def _params(self, ef, exact, nprobe):
        if ef is None and not exact and nprobe is None:
            return None
        return self.pb.common.SearchParams(ef=_count(ef, "ef"), exact=bool(exact),
                                           nprobe=_count(nprobe, "nprobe"))

    def _query_fields(self, k, filter, offset, ef, exact, nprobe, max_distance, with_payload,
                      with_vectors):
        flt, text = self._codec.filters(filter)
        fields = dict(k=_count(k, "k", allow_none=False), offset=_count(offset, "offset"),
                      filter_text=text, with_payload=self._codec.selector(with_payload),
                      with_vectors=bool(with_vectors))
        if flt is not None:
            fields["filter"] = flt
        params = self._params(ef, exact, nprobe)
        if params is not None:
            fields["params"] = params
        if max_distance is not None:
            if isinstance(max_distance, bool) or not isinstance(max_distance, numbers.Real):
                raise InvalidArgument(f"max_distance must be a number, not {max_distance!r}")
            fields["max_distance"] = float(max_distance)
        return fields

    def search(self, collection, vector, k=10, filter=None, offset=0, ef=None, exact=False,
               max_distance=None, with_payload=True, with_vectors=False, nprobe=None):
        """k-nearest-neighbour search; returns a list of ScoredPoint, closest first.

        Args:
            vector: the query (list, tuple, array('f') or numpy array).
            k: results wanted, 1..10,000 (k + offset at most 10,000); offset skips results.
            filter: text in the server's filter syntax, e.g.
                ``"label = 3 and price < 10.5 and color in ['red', 'blue']"``, or a dict:
                ``{"must": [{"field": "label", "match": 3},
                {"field": "price", "range": {"lt": 10.5}}], "should": [...], "must_not": [...]}``,
                or the shorthand ``{"label": 3, "color": ["red", "blue"]}`` (every key matches).
                Conditions: match (str/int/bool or a list: any of), except (none of), range
                (gt/gte/lt/lte), has_id, is_empty, is_null, nested must/should/must_not.
            ef: HNSW candidate list size; nprobe: IVF lists probed; exact: brute-force search.
            max_distance: only return points at most this far (the distance's units: squared
                L2, 1 - cosine, or negated dot product).
            with_payload: True, False, a list of keys, or {"exclude": [keys]}.
            with_vectors: also return the stored vectors.
        """
        P = self.pb.points
        fields = self._query_fields(k, filter, offset, ef, exact, nprobe, max_distance,
                                    with_payload, with_vectors)
        req = self._build(P.SearchRequest, collection=collection,
                          vector=self._codec.vector(vector, "query vector"), **fields)
        r = self._call(self._points.Search, req)
        return self._points_out(r.points, req.with_payload, with_vectors, scored=True)

    def search_batch(self, collection, vectors, k=10, filter=None, offset=0, ef=None,
                     exact=False, max_distance=None, with_payload=True, with_vectors=False,
                     nprobe=None):
        """Several searches with the same parameters (see :meth:`search`) in one round trip
        (a 2-D numpy array works as ``vectors``). Returns one list of ScoredPoint per vector, in
        order. More than 1,024 queries are sent in several requests."""
        P = self.pb.points
        fields = self._query_fields(k, filter, offset, ef, exact, nprobe, max_distance,
                                    with_payload, with_vectors)
        queries = [self._build(P.BatchSearchQuery, vector=self._codec.vector(v, f"query {i}"),
                               **fields) for i, v in enumerate(vectors)]
        out = []
        for i in range(0, len(queries), MAX_BATCH_QUERIES):
            req = P.SearchBatchRequest(collection=collection,
                                       queries=queries[i:i + MAX_BATCH_QUERIES])
            r = self._call(self._points.SearchBatch, req)
            out.extend(self._points_out(res.points, fields["with_payload"], with_vectors,
                                        scored=True) for res in r.results)
        return out

    def recommend(self, collection, positive, negative=(), strategy="average", k=10,
                  filter=None, offset=0, max_distance=None, with_payload=True,
                  with_vectors=False, ef=None, exact=False):
        """Search by example: points like ``positive`` and unlike ``negative``; the example
        points themselves are never returned. Returns a list of ScoredPoint.

        Examples are point ids (int / UUID str) or raw vectors, mixed freely; a single id or a
        single numpy vector may be passed alone. (A flat list of ints is a list of ids: wrap a
        raw vector in a list.) strategy: "average" (one search with p + (p - n)) or "best"
        (one search per positive example; see points.proto). An example id that does not exist
        raises NotFound; no positive example raises InvalidArgument. Other arguments as in
        :meth:`search`.
        """
        P = self.pb.points
        pos_ids, pos_vecs = self._examples(positive, "positive")
        neg_ids, neg_vecs = self._examples(negative, "negative")
        fields = self._query_fields(k, filter, offset, ef, exact, None, max_distance,
                                    with_payload, with_vectors)
        req = self._build(P.RecommendRequest, collection=collection, positive=pos_ids,
                          negative=neg_ids, positive_vectors=pos_vecs, negative_vectors=neg_vecs,
                          strategy=P.RecommendStrategy.Value(
                              _choice(strategy, _STRATEGIES, "recommend strategy")),
                          **fields)
        r = self._call(self._points.Recommend, req)
        return self._points_out(r.points, req.with_payload, with_vectors, scored=True)

    def _examples(self, xs, what):
        codec = self._codec
        if xs is None:
            return [], []
        if getattr(xs, "ndim", None) == 1 or isinstance(xs, (str, numbers.Integral)) or (
                hasattr(xs, "urn")):
            xs = [xs]
        ids, vecs = [], []
        for i, x in enumerate(xs):
            if codec.is_vector_like(x):
                vecs.append(codec.vector(x, f"{what} example {i}"))
            else:
                ids.append(codec.point_id(x))
        return ids, vecs

    def scroll(self, collection, filter=None, limit=100, with_payload=True, with_vectors=False):
        """Iterates over every point (passing ``filter``, text or dict as in :meth:`search`),
        fetching pages of ``limit`` points (1..10,000) as it goes. Returns a generator of Point
        in a stable order (by shard, then id; numeric ids before UUIDs); a point that exists
        throughout the iteration is yielded exactly once."""
        P = self.pb.points
        flt, text = self._codec.filters(filter)
        req = P.ScrollPointsRequest(collection=collection, filter_text=text,
                                    limit=_count(limit, "limit", allow_none=False),
                                    with_payload=self._codec.selector(with_payload),
                                    with_vectors=bool(with_vectors))
        if flt is not None:
            req.filter.CopyFrom(flt)
        return self._scroll_pages(req)

    def _scroll_pages(self, req):
        while True:
            r = self._call(self._points.Scroll, req)
            yield from self._points_out(r.points, req.with_payload, req.with_vectors,
                                        scored=False)
            if not r.next_cursor:
                return
            req.cursor = r.next_cursor

    def count(self, collection, filter=None, exact=False):
        """Number of points (passing ``filter``, text or dict as in :meth:`search`). exact=True
        asks for an exact count where the server would otherwise estimate."""
        P = self.pb.points
        flt, text = self._codec.filters(filter)
        req = P.CountPointsRequest(collection=collection, filter_text=text, exact=bool(exact))
        if flt is not None:
            req.filter.CopyFrom(flt)
        return self._call(self._points.Count, req).count


def _read(path):
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()
