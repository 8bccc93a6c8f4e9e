"""pycp: an ADS control plane for tests, written with Debian's python3-grpcio and the message
classes protoc generates from proto/ (test_xds_server.pb()), independent of remora's C
protobuf and gRPC code.  It serves StreamAggregatedResources (SotW) and
DeltaAggregatedResources (Delta) for Listener, RouteConfiguration, Cluster,
ClusterLoadAssignment and Secret ("sds"), in-process (grpc.server on a thread pool); the same
streams also answer as envoy.service.secret.v3.SecretDiscoveryService (StreamSecrets /
DeltaSecrets: an SDS server of its own, as Istio's node agent on the sds-grpc cluster).

    cp = PyCP()                                 # 127.0.0.1, a free port: cp.port
    cp = PyCP(tls=(crt, key, client_ca))        # served over TLS (client_ca: mTLS, else None)
    cp = PyCP(unix=path)                        # on a unix socket (Istio's XDS), not TCP
    v = cp.set("cds", {"backend": eds_cluster("backend")})   # replace the type's state, push
    cp.wait_ack("cds", v)                       # the client ACKed that version
    nack = cp.wait_nack("cds")                  # the NACK of the last response: a request
    cp.stop(); cp2 = PyCP(port=cp.port, like=cp)  # a restart: same port, same state

State and versions
- A type is withheld until the first set() of it: nothing is sent for it before (as a control
  plane that does not know the type yet).  set(type, {name: message or proto3-JSON dict})
  replaces the whole state of the type; update(type, {name: message or None}) changes some
  names (None deletes).  Both return the type's new version, "<short>-<n>" ("cds-3"), counted
  per type.  Delta per-resource versions are resource_version(): a hash of the resource's
  (deterministic) bytes, so they survive restarts.  Nonces are unique ("<instance>-<n>").
- changed_version(type, name): the version at which that resource's bytes last changed (what
  Envoy's /config_dump shows for a SotW resource: unchanged resources keep their version).

Protocol (xDS spec; go-control-plane's behaviour)
- Subscriptions per stream and type.  SotW: resource_names is the whole subscription; "*" is a
  wildcard; an empty list on the first request is the legacy wildcard for Listener and Cluster,
  which ends with the first non-empty list.  Delta: resource_names_subscribe / _unsubscribe
  accumulate; the legacy wildcard (first request without names, Listener/Cluster) ends with
  the first explicit subscription, "*" subscribes / unsubscribes the wildcard.
- SotW responses: on the first request of a type (a wildcard one even when the state is empty,
  a by-name one when a subscribed resource exists), on a subscription change, and on set()
  when what the stream would get changed.  Listener/Cluster carry the full state (wildcard),
  RouteConfiguration/ClusterLoadAssignment the subscribed names.  ACKs and NACKs only get
  recorded: nothing is resent after a NACK until the state changes.  A request whose
  response_nonce is not the latest sent for its type is stale and ignored.
- Delta responses carry only what the client does not have at that version: its
  initial_resource_versions on the first request of a type count as had; removed_resources
  name deleted resources the client had.  The first wildcard request is answered even when
  there is nothing to send.  Unsubscribed names are forgotten (a re-subscription resends).
- send_raw(type, items) sends a hand-made response (for NACK tests: wrong type_url,
  undecodable bytes, duplicate names) to every open stream subscribed to the type, without
  changing the state.

Records: requests [(kind 'sotw'|'delta', stream id, request)], responses [(kind, stream id,
response)], streams_opened.  Waits are bounded and raise harness.TestFailure.
"""
import hashlib
import os
import queue
import secrets
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_xds_server import pb  # noqa: E402

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
T_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
T_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
T_CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
T_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
TYPES = {"lds": T_LISTENER, "rds": T_ROUTE, "cds": T_CLUSTER, "eds": T_CLA, "sds": T_SECRET}
SHORT = {v: k for k, v in TYPES.items()}
LEGACY_WILDCARD = (T_LISTENER, T_CLUSTER)
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def type_url(t):
    """'lds'/'rds'/'cds'/'eds' or a full type URL -> the type URL."""
    return TYPES.get(t, t)


# ---- messages --------------------------------------------------------------------------------

_CLASSES = {}


def classes():
    """{type URL: generated class} for the four resource types; imports the extension modules
    (HCM, router, ...) so that json_format resolves their Any payloads."""
    if _CLASSES:
        return _CLASSES
    m = pb()
    import importlib
    for mod in ("envoy.extensions.filters.network.http_connection_manager.v3."
                "http_connection_manager_pb2",
                "envoy.extensions.filters.http.router.v3.router_pb2",
                "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
                "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
                "google.protobuf.struct_pb2", "google.rpc.status_pb2"):
        importlib.import_module(mod)
    secret = importlib.import_module("envoy.extensions.transport_sockets.tls.v3.secret_pb2")
    _CLASSES.update({T_LISTENER: m["listener"].Listener, T_ROUTE: m["route"].RouteConfiguration,
                     T_CLUSTER: m["cluster"].Cluster,
                     T_CLA: m["endpoint"].ClusterLoadAssignment, T_SECRET: secret.Secret})
    return _CLASSES


def message(t, value):
    """A resource message of type <t> from a message (returned as is) or a proto3-JSON dict."""
    from google.protobuf import json_format
    t = type_url(t)
    if isinstance(value, dict):
        return json_format.ParseDict(value, classes()[t]())
    return value


def name_of(t, msg):
    return msg.cluster_name if type_url(t) == T_CLA else msg.name


def to_bytes(msg):
    return msg.SerializeToString(deterministic=True)


def resource_version(data):
    """The Delta per-resource version of serialized resource bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def any_of(t, data):
    """A google.protobuf.Any with type URL <t> and raw <data> (bytes or a message)."""
    from google.protobuf import any_pb2
    if not isinstance(data, bytes):
        data = to_bytes(data)
    return any_pb2.Any(type_url=type_url(t), value=data)


def to_dict(msg):
    """A message as the proto3 JSON Envoy users write (.proto field names, '@type' on top)."""
    from google.protobuf import json_format
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return {"@type": "type.googleapis.com/" + msg.DESCRIPTOR.full_name, **d}


# ---- resource builders (proto3 JSON dicts) ---------------------------------------------------

def ads_source():
    return {"ads": {}, "resource_api_version": "V3"}


def listener(name, port, route_name, stat_prefix="ingress_http", extra=None):
    """A listener on 127.0.0.1:<port>: one HCM whose routes come from RDS <route_name>."""
    d = {"name": name,
         "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
         "filter_chains": [{"filters": [{
             "name": "envoy.filters.network.http_connection_manager",
             "typed_config": {
                 "@type": HCM, "stat_prefix": stat_prefix,
                 "rds": {"config_source": ads_source(), "route_config_name": route_name},
                 "http_filters": [{"name": "envoy.filters.http.router",
                                   "typed_config": {"@type": ROUTER}}]}}]}]}
    d.update(extra or {})
    return d


def route_config(name, routes, extra=None):
    """routes: [(path prefix, cluster)] in one '*' virtual host."""
    d = {"name": name,
         "virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": p}, "route": {"cluster": c}}
                                       for p, c in routes]}]}
    d.update(extra or {})
    return d


def eds_cluster(name, extra=None):
    """An EDS cluster whose endpoints come over ADS."""
    d = {"name": name, "type": "EDS", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
         "eds_cluster_config": {"eds_config": ads_source()}}
    d.update(extra or {})
    return d


def cla(name, ports, address="127.0.0.1"):
    """A ClusterLoadAssignment: <address>:<port> for each port, one locality."""
    return {"cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": address,
                                                              "port_value": p}}}}
                for p in ports]}]}


# ---- the server ------------------------------------------------------------------------------

class _Sub:
    """One type on one stream: the client's subscription and what it was sent."""

    def __init__(self, t):
        self.type = t
        self.wildcard = False
        self.legacy = False        # legacy wildcard (no names on the first request)
        self.names = set()
        self.nonce = None          # latest response nonce of the type
        self.sent = None           # SotW: {name: bytes} of the last response (None: nothing yet)
        self.version = None        # SotW: version_info of the last response
        self.has = {}              # Delta: {name: version} the client has (as far as we know)

    def subscription(self):
        return set(self.names) | ({"*"} if self.wildcard else set())


class _Stream:
    def __init__(self, sid, kind):
        self.id = sid
        self.kind = kind
        self.out = queue.Queue()
        self.subs = {}
        self.node = None


_RAW = object()   # SotW: the last response was hand-made (any later state is resent)


class PyCP:
    def __init__(self, port=0, like=None, tls=None, unix=None):
        import grpc
        self.d = pb()["d"]
        classes()
        self.lock = threading.Condition()
        self.state = {}            # type -> {name: bytes}; absent: withheld
        self.counts = {}           # type -> number of versions
        self.changed = {}          # (type, name) -> version when its bytes last changed
        if like is not None:
            with like.lock:
                self.state = {t: dict(s) for t, s in like.state.items()}
                self.counts = dict(like.counts)
                self.changed = dict(like.changed)
        self.tag = secrets.token_hex(3)
        self.nonce_seq = 0
        self.requests = []
        self.responses = []
        self.streams = {}          # open streams by id
        self.streams_opened = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        d = self.d

        def methods(sotw, delta):
            return {sotw: grpc.stream_stream_rpc_method_handler(
                        lambda it, ctx: self._serve(it, ctx, "sotw"),
                        request_deserializer=d.DiscoveryRequest.FromString,
                        response_serializer=d.DiscoveryResponse.SerializeToString),
                    delta: grpc.stream_stream_rpc_method_handler(
                        lambda it, ctx: self._serve(it, ctx, "delta"),
                        request_deserializer=d.DeltaDiscoveryRequest.FromString,
                        response_serializer=d.DeltaDiscoveryResponse.SerializeToString)}
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(
                SERVICE, methods("StreamAggregatedResources", "DeltaAggregatedResources")),
            grpc.method_handlers_generic_handler(
                SDS_SERVICE, methods("StreamSecrets", "DeltaSecrets"))))
        self.tls = tls if tls is not None or like is None else like.tls
        if self.tls:
            crt, key, client_ca = self.tls
            rd = lambda p: open(p, "rb").read()  # noqa: E731
            creds = grpc.ssl_server_credentials(
                [(rd(key), rd(crt))], root_certificates=rd(client_ca) if client_ca else None,
                require_client_auth=client_ca is not None)
            self.port = self.server.add_secure_port(f"127.0.0.1:{port}", creds)
        elif unix:
            self.port = self.server.add_insecure_port(f"unix:{unix}")
        else:
            self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port, f"could not bind {unix or f'127.0.0.1:{port}'}"
        self.server.start()

    def stop(self):
        """Stop serving: every stream ends (UNAVAILABLE/cancelled), the port is released."""
        self.server.stop(grace=0).wait(5)
        with self.lock:
            for s in self.streams.values():
                s.out.put(None)

    # -- test side: state ----------------------------------------------------------------------
    def version(self, t):
        t = type_url(t)
        return f"{SHORT[t]}-{self.counts.get(t, 0)}"

    def set(self, t, resources):
        """Replace the state of type <t> with {name: message or dict}; push; returns the
        version."""
        t = type_url(t)
        new = {}
        for name, value in resources.items():
            m = message(t, value)
            assert name_of(t, m) == name, f"{SHORT[t]} {name!r}: the resource is named " \
                                          f"{name_of(t, m)!r}"
            new[name] = to_bytes(m)
        with self.lock:
            old = self.state.get(t, {})
            self.counts[t] = self.counts.get(t, 0) + 1
            v = self.version(t)
            for name, b in new.items():
                if old.get(name) != b:
                    self.changed[(t, name)] = v
            self.state[t] = new
            for s in self.streams.values():
                if t in s.subs:
                    self._push(s, s.subs[t])
            return v

    def update(self, t, changes):
        """Change some resources of type <t>: {name: message, dict or None (delete)}."""
        t = type_url(t)
        with self.lock:
            cur = {n: classes()[t].FromString(b) for n, b in self.state.get(t, {}).items()}
        for name, value in changes.items():
            if value is None:
                cur.pop(name, None)
            else:
                cur[name] = value
        return self.set(t, cur)

    def resource_version(self, t, name):
        with self.lock:
            return resource_version(self.state[type_url(t)][name])

    def changed_version(self, t, name):
        with self.lock:
            return self.changed[(type_url(t), name)]

    def send_raw(self, t, items):
        """Send a hand-made response of type <t> on every open stream subscribed to it:
        items = [(name, google.protobuf.Any)] (the name is used by Delta's Resource wrapper).
        The SotW version_info is a new version of the type; the state does not change.
        Returns the nonces sent."""
        t = type_url(t)
        nonces = []
        with self.lock:
            self.counts[t] = self.counts.get(t, 0) + 1
            v = self.version(t)
            for s in self.streams.values():
                sub = s.subs.get(t)
                if sub is None:
                    continue
                nonce = self._nonce()
                if s.kind == "sotw":
                    r = self.d.DiscoveryResponse(version_info=v, type_url=t, nonce=nonce,
                                                 resources=[a for _, a in items])
                    sub.sent, sub.version = _RAW, v
                else:
                    r = self.d.DeltaDiscoveryResponse(
                        system_version_info=v, type_url=t, nonce=nonce,
                        resources=[self.d.Resource(name=n, version=resource_version(a.value),
                                                   resource=a) for n, a in items])
                    for n, a in items:
                        sub.has[n] = resource_version(a.value)
                sub.nonce = nonce
                self._send(s, r)
                nonces.append(nonce)
            self.lock.notify_all()
        return nonces

    # -- server side ---------------------------------------------------------------------------
    def _nonce(self):
        self.nonce_seq += 1
        return f"{self.tag}-{self.nonce_seq}"

    def _send(self, s, r):
        self.responses.append((s.kind, s.id, r))
        s.out.put(r)

    def _push(self, s, sub, first=False):
        """Send <s> what it is due for <sub>'s type, if anything (lock held)."""
        state = self.state.get(sub.type)
        if state is None:
            return
        if s.kind == "sotw":
            self._push_sotw(s, sub, state)
        else:
            self._push_delta(s, sub, state, first)
        self.lock.notify_all()

    def _wanted(self, sub, state):
        if sub.wildcard:
            return dict(state)
        return {n: state[n] for n in sub.names if n in state}

    def _push_sotw(self, s, sub, state):
        carry = self._wanted(sub, state)
        v = self.version(sub.type)
        if sub.sent is None:
            due = sub.wildcard or bool(carry)
        else:
            due = sub.sent is _RAW or carry != sub.sent or (sub.wildcard and sub.version != v)
        if not due:
            return
        nonce = self._nonce()
        r = self.d.DiscoveryResponse(
            version_info=v, type_url=sub.type, nonce=nonce,
            resources=[any_of(sub.type, carry[n]) for n in sorted(carry)])
        sub.sent, sub.version, sub.nonce = carry, v, nonce
        self._send(s, r)

    def _push_delta(self, s, sub, state, first):
        carry = self._wanted(sub, state)
        changed = sorted(n for n, b in carry.items() if sub.has.get(n) != resource_version(b))
        removed = sorted(n for n in sub.has if n not in state and
                         (sub.wildcard or n in sub.names))
        if not changed and not removed and not (first and sub.wildcard):
            return
        nonce = self._nonce()
        r = self.d.DeltaDiscoveryResponse(
            system_version_info=self.version(sub.type), type_url=sub.type, nonce=nonce,
            resources=[self.d.Resource(name=n, version=resource_version(carry[n]),
                                       resource=any_of(sub.type, carry[n])) for n in changed],
            removed_resources=removed)
        for n in changed:
            sub.has[n] = resource_version(carry[n])
        for n in removed:
            del sub.has[n]
        sub.nonce = nonce
        self._send(s, r)

    def _on_sotw(self, s, req):
        t = req.type_url
        sub = s.subs.get(t)
        first = sub is None
        if first:
            sub = s.subs[t] = _Sub(t)
        elif (req.response_nonce or None) != sub.nonce:
            return          # stale (or a nonce of another stream): ignored
        names = set(req.resource_names)
        if first and not names and t in LEGACY_WILDCARD:
            sub.legacy = sub.wildcard = True
            names_changed = True
        elif sub.legacy and not names:
            names_changed = False
        else:
            sub.legacy = False
            new_wild, new_names = "*" in names, names - {"*"}
            names_changed = (new_wild, new_names) != (sub.wildcard, sub.names)
            sub.wildcard, sub.names = new_wild, new_names
        if first or names_changed:
            self._push(s, sub)

    def _on_delta(self, s, req):
        t = req.type_url
        sub = s.subs.get(t)
        first = sub is None
        if first:
            sub = s.subs[t] = _Sub(t)
            sub.has = dict(req.initial_resource_versions)
            if not req.resource_names_subscribe and t in LEGACY_WILDCARD:
                sub.legacy = sub.wildcard = True
        subscribe, unsubscribe = list(req.resource_names_subscribe), \
            list(req.resource_names_unsubscribe)
        if sub.legacy and subscribe:
            sub.legacy = sub.wildcard = False
        for n in subscribe:
            if n == "*":
                sub.wildcard = True
            else:
                sub.names.add(n)
        for n in unsubscribe:
            if n == "*":
                sub.wildcard = False
            else:
                sub.names.discard(n)
                if not sub.wildcard:
                    sub.has.pop(n, None)
        if first or subscribe or unsubscribe:
            self._push(s, sub, first=first)

    def _serve(self, request_iterator, context, kind):
        with self.lock:
            self.streams_opened += 1
            s = _Stream(self.streams_opened, kind)
            self.streams[s.id] = s

        def read():
            try:
                for req in request_iterator:
                    with self.lock:
                        self.requests.append((kind, s.id, req))
                        if s.node is None and req.HasField("node"):
                            s.node = req.node
                        if req.type_url:
                            (self._on_sotw if kind == "sotw" else self._on_delta)(s, req)
                        self.lock.notify_all()
            except Exception:  # noqa: BLE001 - the stream ended (cancelled or reset)
                pass
            s.out.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while context.is_active():
                try:
                    r = s.out.get(timeout=0.1)
                except queue.Empty:
                    continue
                if r is None:
                    return
                yield r
        finally:
            with self.lock:
                self.streams.pop(s.id, None)
                self.lock.notify_all()

    # -- test side: waiting --------------------------------------------------------------------
    def wait_for(self, fn, what, timeout=10.0):
        """Wait until fn() (called with the lock held) returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                got = fn()
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise harness.TestFailure(f"pycp: no {what} within {timeout}s; requests:\n"
                                              + self.describe_requests())
                self.lock.wait(min(left, 0.1))

    def wait_request(self, pred, what, timeout=10.0):
        """The first recorded (kind, stream id, request) for which pred holds."""
        return self.wait_for(lambda: next((r for r in self.requests if pred(*r)), None),
                             f"request {what}", timeout)

    def _nonces(self, t, version=None):
        """Nonces of the responses of type <t> (of <version>) sent so far."""
        out = set()
        for kind, _, r in self.responses:
            if r.type_url != t:
                continue
            v = r.version_info if kind == "sotw" else r.system_version_info
            if version is None or v == version:
                out.add(r.nonce)
        return out

    def wait_ack(self, t, version=None, timeout=10.0):
        """The ACK of a response of type <t> carrying <version> (default: the current one):
        SotW: version_info = that version, response_nonce = its nonce, no error_detail;
        Delta: response_nonce = its nonce, no error_detail.  Returns the request."""
        t = type_url(t)
        version = version or self.version(t)

        def ack(kind, sid, req):
            if req.type_url != t or req.HasField("error_detail"):
                return False
            if kind == "sotw" and req.version_info != version:
                return False
            return req.response_nonce in self._nonces(t, version)
        return self.wait_request(ack, f"ACKing {SHORT[t]} version {version}", timeout)[2]

    def wait_nack(self, t, nonce=None, timeout=10.0):
        """The NACK (error_detail set) of the response with <nonce> (default: the latest
        response of type <t>).  Returns the request."""
        t = type_url(t)
        if nonce is None:
            with self.lock:
                sent = [r.nonce for _, _, r in self.responses if r.type_url == t]
            assert sent, f"pycp: no {SHORT[t]} response was sent"
            nonce = sent[-1]
        return self.wait_request(
            lambda kind, sid, req: req.type_url == t and req.response_nonce == nonce
            and req.HasField("error_detail"), f"NACKing {SHORT[t]} nonce {nonce}", timeout)[2]

    def _answers(self, t, error):
        """The first request answering each response of type <t> (by nonce) with (error) or
        without (not error) error_detail: one per ACKed / NACKed response."""
        t = type_url(t)
        with self.lock:
            sent, seen, out = self._nonces(t), set(), []
            for _, _, req in self.requests:
                if req.type_url == t and req.response_nonce in sent and \
                        req.HasField("error_detail") == error and req.response_nonce not in seen:
                    seen.add(req.response_nonce)
                    out.append(req)
            return out

    def acks(self, t):
        """The ACKs of type <t>: per response, the first request echoing its nonce without
        error_detail (a later request with the same nonce, e.g. a subscription change, is not
        counted again)."""
        return self._answers(t, False)

    def nacks(self, t):
        """The NACKs of type <t>: per response, the first request with error_detail."""
        return self._answers(t, True)

    def subscription(self, t, stream=None):
        """The client's current subscription to <t> on <stream> (default: the newest open
        stream), as a set of names with "*" for the wildcard; None if it never asked."""
        t = type_url(t)
        with self.lock:
            if stream is None:
                if not self.streams:
                    return None
                stream = max(self.streams)
            s = self.streams.get(stream)
            sub = s.subs.get(t) if s else None
            return sub.subscription() if sub else None

    def wait_subscribed(self, t, names, timeout=10.0):
        """Wait until the client's subscription to <t> is exactly <names> ("*": wildcard)."""
        want = set(names)
        self.wait_for(lambda: self._sub_locked(type_url(t)) == want,
                      f"subscription {sorted(want)} to {SHORT[type_url(t)]}", timeout)

    def _sub_locked(self, t):
        if not self.streams:
            return None
        sub = self.streams[max(self.streams)].subs.get(t)
        return sub.subscription() if sub else None

    def first_requests(self, stream):
        """{type URL: the first request of that type on <stream>}, and the stream's first
        request overall (None key)."""
        out = {}
        with self.lock:
            for _, sid, req in self.requests:
                if sid != stream:
                    continue
                out.setdefault(None, req)
                out.setdefault(req.type_url, req)
        return out

    def describe_requests(self, last=40):
        return "\n".join(f"  [{sid}] {describe(kind, r)}"
                         for kind, sid, r in self.requests[-last:])


def describe(kind, r):
    """One line for a recorded request."""
    err = (f" error_detail={{code={r.error_detail.code} message={r.error_detail.message!r}}}"
           if r.HasField("error_detail") else "")
    node = f" node.id={r.node.id!r}" if r.HasField("node") else ""
    t = SHORT.get(r.type_url, r.type_url)
    if kind == "sotw":
        return (f"DiscoveryRequest({t} names={list(r.resource_names)} "
                f"version={r.version_info!r} nonce={r.response_nonce!r}{node}{err})")
    return (f"DeltaDiscoveryRequest({t} +{list(r.resource_names_subscribe)} "
            f"-{list(r.resource_names_unsubscribe)} "
            f"initial={dict(r.initial_resource_versions)} nonce={r.response_nonce!r}"
            f"{node}{err})")
