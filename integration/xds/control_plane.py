#!/usr/bin/env python3
"""A test control plane that serves a sidecar-shaped Envoy what istiod and istio-agent would.

  control_plane.py --dir DIR

Listens on DIR/xds.sock (ADS, delta xDS: what Istio's bootstrap uses since ISTIO_DELTA_XDS
defaults to true, pkg/bootstrap/config.go) and DIR/sds.sock (SDS, state of the world, as
istio-agent's SDS server), prints {"ready": true, ...} on stdout, then reads one JSON command
per line on stdin and answers each with one JSON line. Built on xds-protos (the Python code
generated from Envoy's data-plane-api) and grpcio: every resource is a real protobuf message.

What it plays:
- istiod: LDS (the EnvoyFilter's listener, its port moved to a free one for the test), CDS and
  RDS "80" (a mesh service on port 80 and Istio's PassthroughCluster), and ECDS served by name
  the way that Istio version's istiod does (extension_config_builder.go): only names under the
  version's prefix, only for the proxy's own namespace, everything else ignored.
- istio-agent: the Wasm config rewritten as pkg/wasm/convert.go does (the remote module turned
  into a local file, the ISTIO_META_* variables stripped), or, when the "fetch" fails, the
  deny-all RBAC filter it serves under the same name for FAIL_CLOSE; and SDS "default" and
  "ROOTCA".

Commands (answers carry "ok"; an error answers {"ok": false, "error": ...}):
  {"cmd": "istiod", "istio_version": "1.31", "manifests": [paths], "listener_port": N,
   "backend_port": M}                  load the applied manifests; answers the ECDS name served
  {"cmd": "sds", "cert": PEM, "key": PEM, "ca": PEM}
  {"cmd": "plugin", "state": "withheld" | "module" | "fetch_failed", "module": path,
   "plugin_config": {...}}             what the agent hands Envoy under the served name
  {"cmd": "wait_ecds", "timeout": s}   until Envoy answered the last ECDS push: ACK or NACK
  {"cmd": "status"}                    names Envoy subscribed to, per type
"""

import argparse
import copy
import hashlib
import json
import os
import queue
import sys
import threading
import time
from concurrent import futures

import grpc
import yaml

# The one model of istiod and istio-agent (scripts/istio_model.py), with the sources it is read from.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts"))
from istio_model import agent_rewrite as agent_wasm, istiod_ecds_name, wasm_config  # noqa: E402
from google.protobuf import any_pb2, json_format, wrappers_pb2  # noqa: F401 (registers types)

# Every message type the served resources contain must be in the descriptor pool for
# json_format to resolve their "@type".
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2  # noqa: F401
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.extensions.wasm.v3 import wasm_pb2 as wasm_plugin_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ECDS = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WILDCARD = "*"
BACKEND = "backend.demo.svc.cluster.local"


# What istiod serves and istio-agent rewrites: scripts/istio_model.py, with the sources read.


def to_any(message):
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def parse(message_class, value):
    return json_format.ParseDict(value, message_class())


def version_of(message):
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]


class State:
    """What the control plane serves, and what Envoy asked for and answered."""

    def __init__(self):
        self.lock = threading.Condition()
        self.resources = {LDS: {}, CDS: {}, RDS: {}, ECDS: {}}
        self.secrets = {}
        self.streams = []
        self.subscribed = {}
        self.ecds_push = None  # (nonce, versions) of the last ECDS push
        self.ecds_answers = []  # {"nonce", "ack", "error"}
        self.plugin = None
        self.namespace_seen = None

    def notify(self):
        with self.lock:
            for q in self.streams:
                q.put("push")
            self.lock.notify_all()


STATE = State()


class Istiod:
    def __init__(self, args):
        self.minor = int(str(args["istio_version"]).split(".")[1])
        docs = []
        for path in args["manifests"]:
            with open(path) as f:
                docs += [d for d in yaml.safe_load_all(f) if d]
        filters = [d for d in docs if d.get("kind") == "EnvoyFilter"]
        plugins = [d for d in docs if d.get("kind") in ("WasmPlugin", "TrafficExtension")]
        if len(filters) != 1 or len(plugins) != 1:
            raise ValueError(f"expected one EnvoyFilter and one plugin resource, got {len(filters)}, {len(plugins)}")
        patches = [p for p in filters[0]["spec"]["configPatches"] if p["applyTo"] == "LISTENER"
                   and p["patch"]["operation"] == "ADD"]
        listener = copy.deepcopy(patches[0]["patch"]["value"])
        listener["address"]["socket_address"]["port_value"] = int(args["listener_port"])
        self.listener = parse(listener_pb2.Listener, listener)
        self.plugin = plugins[0]
        meta = self.plugin["metadata"]
        self.namespace = meta["namespace"]
        self.served_name = istiod_ecds_name(self.minor, self.plugin["kind"], meta["namespace"], meta["name"])
        self.backend_port = int(args["backend_port"])

    def clusters(self):
        backend = {
            "name": f"outbound|80||{BACKEND}", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": f"outbound|80||{BACKEND}", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                             "port_value": self.backend_port}}}}]}]},
        }
        # Istio's PassthroughCluster (pilot/pkg/networking/core/cluster_builder.go): the
        # original destination of the connection, i.e. the loopback listener itself.
        passthrough = {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
                       "connect_timeout": "1s"}
        return [parse(cluster_pb2.Cluster, backend), parse(cluster_pb2.Cluster, passthrough)]

    def route(self):
        return parse(route_pb2.RouteConfiguration, {
            "name": "80",
            "virtual_hosts": [
                {"name": f"{BACKEND}:80", "domains": [BACKEND, f"{BACKEND}:80", "backend", "backend:80",
                                                      "backend.demo", "backend.demo:80"],
                 "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"outbound|80||{BACKEND}"}}]},
                {"name": "allow_any", "domains": ["*"],
                 "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}]},
            ],
        })

    def istiod_wasm(self, plugin_config):
        """The Wasm filter as istiod builds it (scripts/istio_model.py, wasm_config)."""
        return parse(wasm_pb2.Wasm, wasm_config(self.minor, self.plugin, plugin_config))


def agent_rewrite(name, wasm, module):
    """istio-agent's conversion (pkg/wasm/convert.go): module fetched -> local file, ISTIO_META_*
    stripped (scripts/istio_model.py, agent_rewrite); fetch failed -> deny-all RBAC under the same
    name (FAIL_CLOSE, Istio 1.25+)."""
    if module is None:
        deny = rbac_pb2.RBAC(rules_stat_prefix="wasm-default-deny")
        deny.rules.SetInParent()  # empty rules (action ALLOW, no policies): deny all
        return extension_pb2.TypedExtensionConfig(name=name, typed_config=to_any(deny))
    as_json = json_format.MessageToDict(wasm, preserving_proto_field_name=True)
    return extension_pb2.TypedExtensionConfig(name=name, typed_config=to_any(parse(wasm_pb2.Wasm, agent_wasm(as_json, module))))


class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def StreamAggregatedResources(self, request_iterator, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this control plane speaks delta xDS, as Istio does")

    def DeltaAggregatedResources(self, request_iterator, context):
        wake = queue.Queue()
        subscribed = {}  # type -> set of names (WILDCARD for all)
        sent = {}  # type -> {name: version}
        pending = {}  # nonce -> type
        nonce = [0]
        with STATE.lock:
            STATE.streams.append(wake)

        def read():
            try:
                for req in request_iterator:
                    if req.node.metadata and "NAMESPACE" in req.node.metadata.fields:
                        STATE.namespace_seen = req.node.metadata.fields["NAMESPACE"].string_value
                    names = subscribed.setdefault(req.type_url, set())
                    if req.response_nonce:
                        pushed = pending.pop(req.response_nonce, None)
                        if pushed == ECDS:
                            with STATE.lock:
                                STATE.ecds_answers.append({"nonce": req.response_nonce,
                                                           "ack": not req.HasField("error_detail"),
                                                           "error": req.error_detail.message or None})
                                STATE.lock.notify_all()
                    first = req.type_url not in sent
                    if first and not req.resource_names_subscribe and req.type_url in (LDS, CDS):
                        names.add(WILDCARD)
                    names.update(req.resource_names_subscribe)
                    names.difference_update(req.resource_names_unsubscribe)
                    sent.setdefault(req.type_url, {})
                    with STATE.lock:
                        STATE.subscribed[req.type_url] = sorted(names)
                    wake.put("request")
            except grpc.RpcError:
                pass
            wake.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                item = wake.get()
                if item is None or not context.is_active():
                    return
                for type_url, names in list(subscribed.items()):
                    if type_url not in sent:
                        continue
                    with STATE.lock:
                        served = dict(STATE.resources.get(type_url, {}))
                    if WILDCARD not in names:
                        served = {n: r for n, r in served.items() if n in names}
                    changed = [(n, r) for n, r in served.items() if sent[type_url].get(n) != version_of(r)]
                    removed = [n for n in sent[type_url] if n not in served]
                    if not changed and not removed:
                        continue
                    nonce[0] += 1
                    response = discovery_pb2.DeltaDiscoveryResponse(
                        type_url=type_url, nonce=str(nonce[0]), system_version_info=str(nonce[0]),
                        removed_resources=removed)
                    for n, r in changed:
                        response.resources.add(name=n, version=version_of(r), resource=to_any(r))
                        sent[type_url][n] = version_of(r)
                    for n in removed:
                        del sent[type_url][n]
                    pending[str(nonce[0])] = type_url
                    if type_url == ECDS:
                        with STATE.lock:
                            STATE.ecds_push = str(nonce[0])
                    yield response
        finally:
            with STATE.lock:
                STATE.streams.remove(wake)


class Sds(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def StreamSecrets(self, request_iterator, context):
        wake = queue.Queue()
        names = set()
        with STATE.lock:
            STATE.streams.append(wake)

        def read():
            try:
                for req in request_iterator:
                    if not req.response_nonce or set(req.resource_names) != names:
                        names.clear()
                        names.update(req.resource_names)
                        wake.put("request")
            except grpc.RpcError:
                pass
            wake.put(None)

        threading.Thread(target=read, daemon=True).start()
        last = None
        n = 0
        try:
            while True:
                item = wake.get()
                if item is None or not context.is_active():
                    return
                with STATE.lock:
                    secrets = [STATE.secrets[name] for name in sorted(names) if name in STATE.secrets]
                if not secrets:
                    continue
                key = tuple(version_of(s) for s in secrets)
                if key == last and item != "request":
                    continue
                last = key
                n += 1
                yield discovery_pb2.DiscoveryResponse(version_info=str(n), nonce=str(n), type_url=SDS,
                                                      resources=[to_any(s) for s in secrets])
        finally:
            with STATE.lock:
                STATE.streams.remove(wake)


def handle(command, istiod):
    cmd = command.get("cmd")
    if cmd == "istiod":
        istiod[0] = Istiod(command)
        with STATE.lock:
            STATE.resources[LDS] = {istiod[0].listener.name: istiod[0].listener}
            STATE.resources[CDS] = {c.name: c for c in istiod[0].clusters()}
            STATE.resources[RDS] = {"80": istiod[0].route()}
            STATE.resources[ECDS] = {}
        STATE.notify()
        return {"ecds_name": istiod[0].served_name, "listener": istiod[0].listener.name}
    if cmd == "sds":
        default = parse(secret_pb2.Secret, {"name": "default", "tls_certificate": {
            "certificate_chain": {"inline_bytes": _b64(command["cert"])},
            "private_key": {"inline_bytes": _b64(command["key"])}}})
        root = parse(secret_pb2.Secret, {"name": "ROOTCA", "validation_context": {
            "trusted_ca": {"inline_bytes": _b64(command["ca"])}}})
        with STATE.lock:
            STATE.secrets = {"default": default, "ROOTCA": root}
        STATE.notify()
        return {}
    if cmd == "plugin":
        server = istiod[0]
        if server is None:
            raise ValueError("no istiod command yet")
        state = command["state"]
        served = {}
        istiod_form = None
        # istiod answers only names under its version's prefix, for the proxy's own namespace
        # (TrafficExtensionsByName / WasmPluginsByName); what it answers, the agent rewrites.
        with STATE.lock:
            own_namespace = STATE.namespace_seen in (None, server.namespace)
        if state != "withheld" and server.served_name is not None and own_namespace:
            wasm = server.istiod_wasm(command.get("plugin_config"))
            istiod_form = {"name": wasm.config.name,
                           "env": sorted(wasm.config.vm_config.environment_variables.key_values)}
            module = command.get("module") if state == "module" else None
            served[server.served_name] = agent_rewrite(server.served_name, wasm, module)
        with STATE.lock:
            if STATE.resources.get(ECDS) != served:
                # The push of this change gets a new nonce once the stream sends it; until then
                # `wait_ecds` must not take Envoy's answer to the previous push for this one's.
                STATE.ecds_push = None
            STATE.resources[ECDS] = served
            requested = set(STATE.subscribed.get(ECDS, []))
        STATE.notify()
        return {"served": sorted(served), "requested": sorted(requested),
                "delivered": sorted(set(served) & requested), "istiod_form": istiod_form}
    if cmd == "wait_ecds":
        deadline = time.monotonic() + float(command.get("timeout", 10))
        with STATE.lock:
            while time.monotonic() < deadline:
                push = STATE.ecds_push
                answers = [a for a in STATE.ecds_answers if a["nonce"] == push]
                if push and answers:
                    return answers[-1]
                STATE.lock.wait(0.1)
        return {"ack": None, "error": "no ECDS answer from Envoy in time", "nonce": STATE.ecds_push}
    if cmd == "status":
        with STATE.lock:
            return {"subscribed": dict(STATE.subscribed), "namespace": STATE.namespace_seen,
                    "ecds_answers": list(STATE.ecds_answers)}
    raise ValueError(f"unknown command {cmd!r}")


def _b64(pem):
    import base64
    return base64.b64encode(pem.encode()).decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(), server)
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(Sds(), server)
    xds_sock, sds_sock = os.path.join(args.dir, "xds.sock"), os.path.join(args.dir, "sds.sock")
    server.add_insecure_port(f"unix:{xds_sock}")
    server.add_insecure_port(f"unix:{sds_sock}")
    server.start()
    print(json.dumps({"ready": True, "xds": xds_sock, "sds": sds_sock}), flush=True)
    istiod = [None]
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": True, **handle(json.loads(line), istiod)}
        except Exception as err:  # the test reads the error; the server keeps serving
            answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
