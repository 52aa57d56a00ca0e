"""Static checks of the deployment files: deploy/k8s (Kubernetes, kustomize) and
docker-compose.yml. No cluster and no Docker needed.

- every file parses; every object has the fields and API version its kind needs;
- the kustomizations render (by hand: resources, namespace, images, the only
  fields they use; an unknown field fails) and list every manifest of their
  folder; names are unique per kind;
- every environment variable a container gets (env, envFrom ConfigMaps and
  Secrets) is a setting of the program it runs, read from that program's
  --help; every referenced ConfigMap, Secret and key exists;
- probe paths are routes of docs/openapi.yaml (/ready for readiness, /health
  for liveness), probe and Service ports name the container's port, which is
  the program's SERVER_PORT (chat-worker's WORKER_HTTP_PORT); exec probes call the image's health check script
  with a mode it knows;
- Prometheus's static targets (deploy/prometheus) are the Compose stack's pods
  and workers on their ports;
- terminationGracePeriodSeconds (and Compose's stop_grace_period) exceed what a
  drain can take: preStop + SERVER_SHUTDOWN_TIMEOUT + the pod's bounded tidy-up
  and close; the liveness budget outlasts the grace period;
- selectors of the Service, PodDisruptionBudget and autoscalers find their pods;
  the Ingress carries what an event stream needs behind ingress-nginx;
- containers run as the image's non-root user with resources set.

Environment: CHATD_BIN, CHAT_WORKER_BIN (the programs, for --help).
"""

import glob
import os
import re
import subprocess
import unittest

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")

API_VERSIONS = {
    "Namespace": "v1", "ConfigMap": "v1", "Secret": "v1", "Service": "v1",
    "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2", "Ingress": "networking.k8s.io/v1",
}
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images"}
# After SERVER_SHUTDOWN_TIMEOUT a pod still removes its registry entries and flushes the
# store (at least 2 s) and gives the last frames to the clients (2 s): src/pod/pod.cpp.
DRAIN_TAIL_SECONDS = 4
HEALTHCHECK_SCRIPT = "chatd-healthcheck"


def duration_seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(text).strip())
    if not m:
        raise ValueError("not a duration: %r" % text)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def program_settings(binary):
    """{setting: default} from `binary --help`."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise AssertionError("%s --help exited %s: %s" % (binary, out.returncode, out.stderr))
    settings, name = {}, None
    for line in out.stdout.splitlines():
        m = re.match(r"^  ([A-Z][A-Z0-9_]+) / --[a-z0-9-]+=", line)
        if m:
            name = m.group(1)
            settings[name] = None
            continue
        m = re.search(r"\(default: (.*)\)\s*$", line)
        if name and m:
            settings[name] = m.group(1)
            name = None
    if len(settings) < 10:
        raise AssertionError("%s --help lists only %d settings: %r" % (binary, len(settings), out.stdout[:500]))
    return settings


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render_kustomization(folder):
    """The objects `kubectl kustomize folder` would print, for the fields our kustomizations use."""
    kpath = os.path.join(folder, "kustomization.yaml")
    (k,) = load_all(kpath)
    unknown = set(k) - KUSTOMIZE_FIELDS
    if unknown:
        raise AssertionError("%s uses %s: teach render_kustomization in %s" % (kpath, sorted(unknown), __file__))
    objects = []
    for res in k.get("resources", []):
        path = os.path.normpath(os.path.join(folder, res))
        if os.path.isdir(path):
            objects += render_kustomization(path)
        elif os.path.isfile(path):
            objects += load_all(path)
        else:
            raise AssertionError("%s: resource %s does not exist" % (kpath, res))
    if "namespace" in k:
        for o in objects:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for o in objects:
            for c in containers_of(o):
                name, _, tag = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = "%s:%s" % (img.get("newName", name), img.get("newTag", tag or "latest"))
    return objects


def containers_of(obj):
    if obj.get("kind") != "Deployment":
        return []
    spec = obj["spec"]["template"]["spec"]
    return spec.get("containers", []) + spec.get("initContainers", [])


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.settings = {
            "chatd": program_settings(os.environ.get("CHATD_BIN", os.path.join(ROOT, "build", "chatd"))),
            "chat-worker": program_settings(os.environ.get("CHAT_WORKER_BIN",
                                                           os.path.join(ROOT, "build", "chat-worker"))),
        }
        with open(os.path.join(ROOT, "docs", "openapi.yaml"), encoding="utf-8") as f:
            cls.routes = set(yaml.safe_load(f)["paths"])
        with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
            dockerfile = f.read()
        m = re.search(r"^USER (\d+)(?::(\d+))?\s*$", dockerfile, re.M)
        cls.image_uid = int(m.group(1))
        cls.image_has_healthcheck = "/usr/local/bin/%s" % HEALTHCHECK_SCRIPT in dockerfile
        cls.files = sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True))
        cls.objects = render_kustomization(os.path.join(K8S, "overlays", "production"))
        (cls.secret,) = load_all(os.path.join(K8S, "base", "secret.template.yaml"))
        cls.by_kind = {}
        for o in cls.objects:
            cls.by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    # -- files and kustomize ---------------------------------------------------
    def test_every_file_parses_with_kind_and_api_version(self):
        self.assertTrue(self.files)
        for path in self.files:
            for doc in load_all(path):
                rel = os.path.relpath(path, ROOT)
                self.assertIn("kind", doc, rel)
                if doc["kind"] == "Kustomization":
                    self.assertEqual(doc["apiVersion"], "kustomize.config.k8s.io/v1beta1", rel)
                    continue
                self.assertIn(doc["kind"], API_VERSIONS, "%s: unexpected kind" % rel)
                self.assertEqual(doc["apiVersion"], API_VERSIONS[doc["kind"]], "%s %s" % (rel, doc["kind"]))
                self.assertRegex(doc["metadata"]["name"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", rel)

    def test_kustomization_lists_every_manifest_and_renders(self):
        base = os.path.join(K8S, "base")
        (k,) = load_all(os.path.join(base, "kustomization.yaml"))
        listed = set(k["resources"])
        present = {os.path.basename(p) for p in glob.glob(os.path.join(base, "*.yaml"))}
        self.assertEqual(present - listed, {"kustomization.yaml", "secret.template.yaml"},
                         "manifests in deploy/k8s/base not listed in its kustomization.yaml")
        kinds = [o["kind"] for o in self.objects]
        for kind, count in (("Deployment", 2), ("Service", 1), ("Ingress", 1), ("PodDisruptionBudget", 1),
                            ("HorizontalPodAutoscaler", 2), ("ConfigMap", 3), ("Namespace", 1)):
            self.assertEqual(kinds.count(kind), count, kind)
        seen = set()
        for o in self.objects:
            key = (o["kind"], o["metadata"]["name"])
            self.assertNotIn(key, seen, "duplicate %s %s" % key)
            seen.add(key)
            if o["kind"] != "Namespace":
                self.assertEqual(o["metadata"]["namespace"], "chatd", key)
        for d in self.by_kind["Deployment"].values():
            for c in containers_of(d):
                self.assertEqual(c["image"], "registry.example.com/chatd:0.1.0", "overlay image of %s" % c["name"])

    # -- programs, settings, probes ----------------------------------------------
    def program_of(self, container):
        cmd = (container.get("command") or []) + (container.get("args") or [])
        self.assertTrue(cmd, "container %s must name its program" % container["name"])
        self.assertIn(cmd[0], self.settings, "container %s runs %s" % (container["name"], cmd[0]))
        return cmd[0]

    def environment_of(self, container):
        """{name: value or None (from a Secret or the downward API)} of a container."""
        env = {}
        for src in container.get("envFrom", []):
            if "configMapRef" in src:
                cm = self.by_kind["ConfigMap"].get(src["configMapRef"]["name"])
                self.assertIsNotNone(cm, "ConfigMap %s" % src["configMapRef"]["name"])
                env.update(cm.get("data", {}))
            elif "secretRef" in src:
                self.assertEqual(src["secretRef"]["name"], self.secret["metadata"]["name"])
                env.update({k: None for k in self.secret["stringData"]})
            else:
                self.fail("unknown envFrom %r" % src)
        for e in container.get("env", []):
            ref = e.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                cm = self.by_kind["ConfigMap"][ref["configMapKeyRef"]["name"]]
                self.assertIn(ref["configMapKeyRef"]["key"], cm["data"], e["name"])
                env[e["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                self.assertEqual(ref["secretKeyRef"]["name"], self.secret["metadata"]["name"], e["name"])
                self.assertIn(ref["secretKeyRef"]["key"], self.secret["stringData"], e["name"])
                env[e["name"]] = None
            elif "fieldRef" in ref:
                env[e["name"]] = None
            else:
                env[e["name"]] = e["value"]
        return env

    def setting(self, program, env, name):
        value = env.get(name)
        return value if value is not None else self.settings[program][name]

    def test_environment_variables_are_settings_of_the_program(self):
        for d in self.by_kind["Deployment"].values():
            for c in containers_of(d):
                program = self.program_of(c)
                env = self.environment_of(c)
                unknown = sorted(set(env) - set(self.settings[program]))
                self.assertFalse(unknown, "%s (%s) sets what `%s --help` does not list: %s"
                                 % (d["metadata"]["name"], c["name"], program, unknown))
                for name, value in env.items():
                    self.assertIsInstance(value, (str, type(None)), "%s: ConfigMap values are strings" % name)

    def test_probes_match_the_programs(self):
        for d in self.by_kind["Deployment"].values():
            for c in containers_of(d):
                program = self.program_of(c)
                env = self.environment_of(c)
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                if program == "chatd":
                    self.assertEqual(ports.get("http"), int(self.setting(program, env, "SERVER_PORT")),
                                     "chatd's container port is its SERVER_PORT")
                    self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/ready")
                    self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/health")
                else:
                    self.assertEqual(ports.get("http"), int(self.setting(program, env, "WORKER_HTTP_PORT")),
                                     "chat-worker's container port is its WORKER_HTTP_PORT")
                    self.assertEqual(c["livenessProbe"]["httpGet"]["path"], "/health")
                for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                    probe = c.get(kind)
                    if not probe:
                        continue
                    if "httpGet" in probe:
                        self.assertIn(probe["httpGet"]["path"], self.routes, "%s path is a route" % kind)
                        port = probe["httpGet"]["port"]
                        self.assertIn(port if isinstance(port, str) else None, ports, "%s port names a port" % kind)
                    else:
                        cmd = probe["exec"]["command"]
                        self.assertEqual(cmd[0], HEALTHCHECK_SCRIPT, "%s of %s" % (kind, c["name"]))
                        self.assertTrue(self.image_has_healthcheck, "the Dockerfile installs %s" % HEALTHCHECK_SCRIPT)
                        self.assertIn(cmd[1:], (["process", program],) +
                                      tuple(["http", str(p), path] for p in ports.values() for path in self.routes),
                                      "%s of %s: %r" % (kind, c["name"], cmd))
                self.assertIn("livenessProbe", c, c["name"])

    def test_grace_period_exceeds_the_drain(self):
        for d in self.by_kind["Deployment"].values():
            spec = d["spec"]["template"]["spec"]
            grace = spec["terminationGracePeriodSeconds"]
            for c in containers_of(d):
                program = self.program_of(c)
                env = self.environment_of(c)
                drain = duration_seconds(self.setting(program, env, "SERVER_SHUTDOWN_TIMEOUT"))
                pre = c.get("lifecycle", {}).get("preStop")
                pre_stop = 0
                if pre:
                    self.assertEqual(pre["exec"]["command"][0], "sleep")
                    pre_stop = float(pre["exec"]["command"][1])
                need = pre_stop + drain + (DRAIN_TAIL_SECONDS if program == "chatd" else 0)
                self.assertGreater(grace, need, "%s: terminationGracePeriodSeconds %s <= preStop %s + drain %s"
                                   % (c["name"], grace, pre_stop, need - pre_stop))
                if program == "chatd":
                    self.assertGreaterEqual(pre_stop, 2, "chatd needs a preStop pause to leave the endpoints first")
                    spread = duration_seconds(self.setting(program, env, "SSE_HAND_OFF_SPREAD"))
                    self.assertLess(spread, drain, "the hand-off fits in the drain")
                # /health turns 503 while draining (both programs): the liveness probe must not kill the pod meanwhile
                live = c["livenessProbe"]
                budget = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
                self.assertGreaterEqual(budget, grace, "%s: liveness budget %ss < grace %ss"
                                        % (c["name"], budget, grace))

    def test_pods_run_as_the_image_user_with_resources(self):
        for d in self.by_kind["Deployment"].values():
            spec = d["spec"]["template"]["spec"]
            self.assertTrue(spec["securityContext"]["runAsNonRoot"])
            self.assertEqual(spec["securityContext"]["runAsUser"], self.image_uid)
            for c in containers_of(d):
                self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
                for kind in ("requests", "limits"):
                    self.assertIn("memory", c["resources"][kind], c["name"])
                    self.assertIn("cpu", c["resources"][kind], c["name"])
                if c["securityContext"].get("readOnlyRootFilesystem"):
                    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                    self.assertIn("/tmp", mounts)
                    env = self.environment_of(c)
                    if "DB_SPILL_DIR" in env:
                        self.assertTrue(any(env["DB_SPILL_DIR"].startswith(m) for m in mounts),
                                        "DB_SPILL_DIR must be on a writable volume")

    # -- selectors, Service, Ingress, PDB, HPA --------------------------------------
    def test_selectors_and_references(self):
        deps = self.by_kind["Deployment"]
        for d in deps.values():
            labels = d["spec"]["template"]["metadata"]["labels"]
            for k, v in d["spec"]["selector"]["matchLabels"].items():
                self.assertEqual(labels.get(k), v, "Deployment %s selector" % d["metadata"]["name"])
        chatd = deps["chatd"]
        pod_labels = chatd["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(chatd["spec"]["replicas"], 3)
        anti = chatd["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + \
            [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        self.assertTrue(any(t["topologyKey"] == "kubernetes.io/hostname" and
                            t["labelSelector"]["matchLabels"].items() <= pod_labels.items() for t in terms))

        svc = self.by_kind["Service"]["chatd"]
        self.assertTrue(svc["spec"]["selector"].items() <= pod_labels.items(), "Service selects the chatd pods")
        port_names = {p["name"] for c in containers_of(chatd) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            self.assertIn(p["targetPort"], port_names)

        pdb = self.by_kind["PodDisruptionBudget"]["chatd"]
        self.assertTrue(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items())
        self.assertLess(pdb["spec"].get("maxUnavailable", 0), chatd["spec"]["replicas"])

        for hpa in self.by_kind["HorizontalPodAutoscaler"].values():
            target = hpa["spec"]["scaleTargetRef"]
            self.assertEqual((target["apiVersion"], target["kind"]), ("apps/v1", "Deployment"))
            self.assertIn(target["name"], deps)
            self.assertGreaterEqual(hpa["spec"]["minReplicas"], deps[target["name"]]["spec"]["replicas"])
            self.assertGreater(hpa["spec"]["maxReplicas"], hpa["spec"]["minReplicas"])
        self.assertEqual({h["spec"]["scaleTargetRef"]["name"] for h in self.by_kind["HorizontalPodAutoscaler"].values()},
                         set(deps))

        ing = self.by_kind["Ingress"]["chatd"]
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                self.assertIn(backend["name"], self.by_kind["Service"])
                self.assertIn(backend["port"]["name"], {p["name"] for p in svc["spec"]["ports"]})

    def test_ingress_is_ready_for_event_streams(self):
        a = self.by_kind["Ingress"]["chatd"]["metadata"]["annotations"]
        prefix = "nginx.ingress.kubernetes.io/"
        self.assertEqual(a[prefix + "proxy-buffering"], "off")
        self.assertEqual(a[prefix + "proxy-http-version"], "1.1")
        for t in ("proxy-read-timeout", "proxy-send-timeout"):
            # far above the 10 s ping interval: a quiet stream is never cut
            self.assertGreaterEqual(int(a[prefix + t]), 600, t)
        self.assertIn("http_503", a[prefix + "proxy-next-upstream"].split(), "a draining pod's 503 is retried")

    # -- docker-compose.yml -----------------------------------------------------------
    def test_compose_file(self):
        with open(COMPOSE, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        services = doc["services"]
        self.assertEqual(set(services), {"nginx", "backend-1", "backend-2", "backend-3", "worker-1", "worker-2",
                                         "nats", "redis", "postgres"})
        with open(os.path.join(ROOT, "deploy", "docker", "services.Dockerfile"), encoding="utf-8") as f:
            stages = re.split(r"^FROM \S+ AS ", f.read(), flags=re.M)[1:]
        checked_in_image = {st.split()[0] for st in stages if "\nHEALTHCHECK " in st}
        for name, svc in services.items():
            target = (svc.get("build") or {}).get("target")
            self.assertTrue("healthcheck" in svc or target in checked_in_image, "%s has no health check" % name)
            for dep, cond in (svc.get("depends_on") or {}).items():
                self.assertIn(dep, services)
                self.assertEqual(cond["condition"], "service_healthy", "%s waits for %s" % (name, dep))
            if name.startswith("backend"):
                self.assertEqual(set(svc["depends_on"]), {"nats", "redis", "postgres"})
        self.assertEqual(set(services["nginx"]["depends_on"]), {"backend-1", "backend-2", "backend-3"})
        self.assertEqual(services["nginx"]["environment"]["UPSTREAMS"].split(),
                         ["backend-%d:8080" % i for i in (1, 2, 3)])
        pod_ids = set()
        for name, svc in services.items():
            if not name.startswith(("backend", "worker")):
                continue
            program = (svc.get("command") or ["chatd"])[0]
            env = svc["environment"]
            unknown = sorted(set(env) - set(self.settings[program]))
            self.assertFalse(unknown, "%s sets what `%s --help` does not list: %s" % (name, program, unknown))
            drain = duration_seconds(re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(env["SERVER_SHUTDOWN_TIMEOUT"])))
            self.assertGreater(duration_seconds(svc["stop_grace_period"]),
                               drain + (DRAIN_TAIL_SECONDS if program == "chatd" else 0), name)
            test = svc["healthcheck"]["test"]
            self.assertEqual(test[:2], ["CMD", HEALTHCHECK_SCRIPT])
            if program == "chatd":
                self.assertEqual(test[2:], ["http", self.settings["chatd"]["SERVER_PORT"], "/ready"])
                pod_ids.add(env["POD_ID"])
            else:
                self.assertEqual(test[2:], ["http", env["WORKER_HTTP_PORT"], "/health"])
        self.assertEqual(pod_ids, {"pod-1", "pod-2", "pod-3"})

    def test_prometheus_scrapes_the_compose_stack(self):
        with open(COMPOSE, encoding="utf-8") as f:
            services = yaml.safe_load(f)["services"]
        with open(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml"), encoding="utf-8") as f:
            jobs = {j["job_name"]: j for j in yaml.safe_load(f)["scrape_configs"]}
        expected = {"chatd": set(), "chat-worker": set()}
        for name, svc in services.items():
            program = (svc.get("command") or [None])[0]
            if name.startswith("backend"):
                expected["chatd"].add("%s:%s" % (name, svc["environment"].get("SERVER_PORT",
                                                                            self.settings["chatd"]["SERVER_PORT"])))
            elif program == "chat-worker":
                expected["chat-worker"].add("%s:%s" % (name, svc["environment"]["WORKER_HTTP_PORT"]))
        for job, targets in expected.items():
            self.assertEqual(jobs[job]["metrics_path"], "/metrics")
            scraped = {t for c in jobs[job]["static_configs"] for t in c["targets"]}
            self.assertEqual(scraped, targets, job)


if __name__ == "__main__":
    unittest.main()
