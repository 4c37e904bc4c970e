#!/usr/bin/env python3
"""Checks of the deploy kit that need no container engine (scripts/test.sh runs it; under a second).

Every YAML file under deploy/ parses; the Kubernetes manifests have what docs/deploy.md promises (hostNetwork,
probes on /readyz and /healthz, the ports the config listens on, the ConfigMap and Secret the Deployment uses);
compose.yaml runs one Courier with PostgreSQL 15 and no Redis; compose.cluster.yaml runs three Courier nodes that
share one Redis (nothing persisted) and one PostgreSQL (on a volume), each node with its own id, its own ports and
its own advertise_url, and all with the same keys, Redis URL and PostgreSQL chat store. The TOML side (every config
passes the server's loader, the ConfigMap equals deploy/k8s/courier.toml) is signaling/tests/deploy_configs.rs.
"""
import pathlib
import re
import sys
import tomllib

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent


def fail(msg):
    print(f"deploy/check.py: {msg}", file=sys.stderr)
    sys.exit(1)


def load_all():
    docs = {}
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        rel = path.relative_to(DEPLOY.parent)
        try:
            docs[str(rel)] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(f"{rel} does not parse: {e}")
    for want in ("deploy/compose.yaml", "deploy/compose.cluster.yaml"):
        if want not in docs:
            fail(f"{want} not found; is the walk broken?")
    return docs


def check_k8s(docs):
    objects = {}
    for rel, items in docs.items():
        if not rel.startswith("deploy/k8s/"):
            continue
        for o in items:
            for key in ("apiVersion", "kind", "metadata"):
                if key not in o:
                    fail(f"{rel}: an object without {key}")
            objects[(o["kind"], o["metadata"]["name"])] = o
    for want in [("Deployment", "courier"), ("Service", "courier"), ("ConfigMap", "courier-config"),
                 ("Secret", "courier-secrets"), ("Namespace", "courier"), ("PersistentVolumeClaim", "courier-data")]:
        if want not in objects:
            fail(f"deploy/k8s has no {want[0]} {want[1]}")
    dep = objects[("Deployment", "courier")]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if dep["spec"]["selector"]["matchLabels"].items() - labels.items():
        fail("the Deployment's selector does not match its pod labels")
    if objects[("Service", "courier")]["spec"]["selector"].items() - labels.items():
        fail("the Service's selector does not match the pod labels")
    if pod.get("hostNetwork") is not True:
        fail("the Deployment must use hostNetwork (one UDP port per node, the node's address announced)")
    (c,) = pod["containers"]
    ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
    if ports != {(7880, "TCP"), (7881, "UDP")}:
        fail(f"container ports {ports}, want 7880/TCP and 7881/UDP")
    if c["readinessProbe"]["httpGet"]["path"] != "/readyz" or c["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail("readiness must probe /readyz and liveness /healthz")
    if c["args"][:3] != ["serve", "--config", "/etc/courier/courier.toml"]:
        fail(f"container args {c['args']}")
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    if volumes[mounts["/etc/courier"]].get("configMap", {}).get("name") != "courier-config":
        fail("/etc/courier must be the ConfigMap courier-config")
    if "courier.toml" not in objects[("ConfigMap", "courier-config")]["data"]:
        fail("the ConfigMap has no courier.toml")
    secret_refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    if secret_refs != ["courier-secrets"]:
        fail(f"the keys come from the Secret courier-secrets, not {secret_refs}")
    if "COURIER_KEYS" not in objects[("Secret", "courier-secrets")]["stringData"]:
        fail("the Secret has no COURIER_KEYS")


def check_compose(docs):
    (compose,) = docs["deploy/compose.yaml"]
    services = compose["services"]
    if set(services) != {"courier", "postgres"}:
        fail(f"compose services {sorted(services)}: want courier and postgres (one node needs no Redis)")
    if not str(services["postgres"]["image"]).startswith("postgres:15"):
        fail("the chat store is PostgreSQL 15")
    courier = services["courier"]
    if courier.get("network_mode") != "host" and not courier.get("ports"):
        fail("courier needs host networking or published ports")
    check_courier_service("compose.yaml courier", courier)


def check_courier_service(what, service):
    """What every Courier service of a compose file needs: the image built from deploy/Dockerfile, mounts of files
    that exist, and a stop grace period longer than the drain of the config it runs."""
    if service["build"]["dockerfile"] != "deploy/Dockerfile":
        fail(f"{what} builds deploy/Dockerfile")
    config = None
    for vol in service["volumes"]:
        src, dst = vol.split(":")[:2]
        if src.startswith("./") and src != "./certs" and not (DEPLOY / src).exists():
            fail(f"{what} mounts {src}, which does not exist")
        if dst == "/etc/courier/courier.toml":
            config = DEPLOY / src
    if config is None:
        fail(f"{what} mounts no /etc/courier/courier.toml")
    drain = tomllib.loads(config.read_text()).get("drain_timeout_secs", 10)
    grace = re.fullmatch(r"(\d+)s", str(service.get("stop_grace_period", "")))
    if service.get("stop_signal") != "SIGTERM" or not grace or int(grace[1]) <= drain:
        fail(f"{what}: SIGTERM drains for {drain} s; stop_grace_period must be longer, not {grace and grace[0]}")


def port_of(what, addr):
    """The port of `HOST:PORT` (a `COURIER_*_ADDR` value)."""
    m = re.fullmatch(r"[^\s]+:(\d+)", str(addr))
    if not m:
        fail(f"{what}: {addr!r} is not HOST:PORT")
    return int(m[1])


def expand(value):
    """A compose value with its `${VAR:-default}` replaced by the default and `${VAR}`, `${VAR:?error}` by VAR."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}",
                  lambda m: m[3] if m[2] == "-" else m[1], str(value))


def check_cluster_compose(docs):
    (compose,) = docs["deploy/compose.cluster.yaml"]
    services = compose["services"]
    for store in ("redis", "postgres"):
        if store not in services:
            fail(f"compose.cluster.yaml has no {store} service")
    nodes = {name: s for name, s in services.items() if s.get("image", "").startswith("courier")}
    if len(nodes) != 3:
        fail(f"compose.cluster.yaml runs {sorted(nodes)}: want three Courier nodes")
    if set(services) != set(nodes) | {"redis", "postgres"}:
        fail(f"compose.cluster.yaml has services {sorted(set(services) - set(nodes))} besides nodes and stores")

    postgres = services["postgres"]
    if not str(postgres["image"]).startswith("postgres:15"):
        fail("the cluster's chat store is PostgreSQL 15")
    named = set(compose.get("volumes") or {})
    if not any(v.split(":")[0] in named and v.split(":")[1] == "/var/lib/postgresql/data" for v in postgres["volumes"]):
        fail("the cluster's PostgreSQL keeps its data in a named volume (it is the durable state)")
    redis = services["redis"]
    if not str(redis["image"]).startswith("redis:7"):
        fail("the cluster's Redis is Redis 7")
    command = [str(c) for c in redis["command"]]
    options = dict(zip(command[1::2], command[2::2]))
    if command[0] != "redis-server" or options.get("--save") != "" or options.get("--appendonly") != "no" \
            or not options.get("--requirepass"):
        fail(f"Redis keeps nothing (--save \"\" --appendonly no) and needs a password (--requirepass): {command}")
    if redis.get("volumes"):
        fail("Redis has no volume: nothing in it is durable, a restart comes back empty")

    shared = {}
    tcp, udp, ids, urls, data = {}, {}, {}, {}, {}

    def claim(taken, key, what):
        if key in taken:
            fail(f"compose.cluster.yaml: {what} is taken by {taken[key]} too")
        taken[key] = what.split()[0]

    for port in (5432, 6379):
        tcp[port] = "the stores"
    for name, node in sorted(nodes.items()):
        what = f"compose.cluster.yaml {name}"
        if node.get("network_mode") != "host":
            fail(f"{what}: host networking (its UDP port and announced address are the host's)")
        check_courier_service(what, node)
        env = {k: expand(v) for k, v in node["environment"].items()}
        for key in ("COURIER_CLUSTER_NODE_ID", "COURIER_CLUSTER_ADVERTISE_URL", "COURIER_HTTP_ADDR",
                    "COURIER_UDP_ADDR"):
            if not env.get(key):
                fail(f"{what} sets no {key}")
        postgres_url = env.get("COURIER_CHAT_POSTGRES_URL", "")
        if env.get("COURIER_CHAT_STORE") != "postgres" or not postgres_url.startswith("postgres://"):
            fail(f"{what}: a cluster keeps chat in PostgreSQL (COURIER_CHAT_STORE=postgres, COURIER_CHAT_POSTGRES_URL)")
        if not env.get("COURIER_CLUSTER_REDIS_URL", "").startswith("redis://"):
            fail(f"{what} has no redis:// COURIER_CLUSTER_REDIS_URL")
        # One cluster: the same Redis, the same PostgreSQL, and the same keys (a token is valid on every node).
        for key in ("COURIER_CLUSTER_REDIS_URL", "COURIER_CHAT_POSTGRES_URL", "COURIER_KEYS", "COURIER_PUBLIC_IP"):
            if shared.setdefault(key, env.get(key)) != env.get(key):
                fail(f"{what}: {key} differs between the nodes")
        claim(ids, env["COURIER_CLUSTER_NODE_ID"], f"{name} node id {env['COURIER_CLUSTER_NODE_ID']}")
        http = port_of(what, env["COURIER_HTTP_ADDR"])
        media = port_of(what, env["COURIER_UDP_ADDR"])
        ice_tcp = port_of(what, env.get("COURIER_ICE_TCP_ADDR", env["COURIER_UDP_ADDR"]))
        claim(tcp, http, f"{name} HTTP port {http}")
        claim(tcp, ice_tcp, f"{name} ICE-TCP port {ice_tcp}")
        claim(udp, media, f"{name} UDP port {media}")
        # Redirected clients come to this URL: this node's own port, never the load balancer's.
        url = env["COURIER_CLUSTER_ADVERTISE_URL"]
        m = re.fullmatch(r"(wss?)://[^/:\s]+:(\d+)/rtc", url)
        if not m or int(m[2]) != http:
            fail(f"{what}: advertise_url {url!r} must be ws(s)://HOST:{http}/rtc, the node's own port")
        claim(urls, url, f"{name} advertise_url {url}")
        volume = next((v.split(":")[0] for v in node["volumes"] if v.split(":")[1] == "/var/lib/courier"), None)
        if volume not in named:
            fail(f"{what}: /var/lib/courier is a named volume of its own")
        claim(data, volume, f"{name} data volume {volume}")


def main():
    docs = load_all()
    check_k8s(docs)
    check_compose(docs)
    check_cluster_compose(docs)
    print(f"deploy/check.py: {len(docs)} YAML files ok")


if __name__ == "__main__":
    main()
