"""A kubelet for tests/kube: runs an injected pod spec as Kubernetes would, with real processes
in a network namespace of its own, its objects (the Pod, the EndpointSlices of the Services
that select it) written to KMock as the kubelet and the endpoint controller write them.

In the kubelet's order (native sidecars, KEP-753): the network namespace (on the bridge of
``tulle.local.pods``, with ``/etc/hosts`` naming every Service at its ClusterIP, the cluster's
DNS being out of reach); the volumes (a projected service-account token issued by the test's
TokenReview answers, ConfigMaps and Secrets read from KMock, emptyDirs); the init containers one
after another, each to exit 0, except a native sidecar (``restartPolicy: Always``), which starts
and must pass its startup probe before the next one starts; then the app's containers, a
``postStart`` hook holding the next container until it returns. A container runs in its own
mount namespace with its volumes mounted at their paths (a fresh tmpfs on ``/run``, as a
container has), as its ``runAsUser``/``runAsGroup``, with the environment the spec declares
(downward API fields, ``$(VAR)`` references) and, for root, only the capabilities it adds.
Probes come from the host to the pod's address, as the kubelet's do; the pod is ready once every
container with a readiness probe has passed it, and its endpoints say so.

Deleting a pod: its endpoints turn terminating (no new requests), each app container's preStop
hook runs and it gets SIGTERM; once they have exited, the native sidecars get theirs, last
first (preStop, then SIGTERM), within the grace period; then the Pod object and the namespace
go. A pod whose app containers all exit (a Job's) is ``Succeeded`` when each exited 0, and its
sidecars are stopped the same way.

What it does not do: images (an image name maps to a directory of this checkout, programs come
from the venv's and the system's PATH), cgroups and resources, seccomp, read-only root file
systems, restarts, liveness probes; a non-root container gets CAP_DAC_READ_SEARCH (ambient) so
that the checkout and the interpreter are readable wherever CI put them, as an image's files
would be. The node the pods run on (their network, the API server, tokens, images) is
kubelet_node.py's."""

from __future__ import annotations

import base64
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kube.kubelet_node import Node

NODE_NAME = "node-1"
PATH_DIRS = (str(Path(sys.executable).parent), "/usr/local/sbin", "/usr/local/bin",
             "/usr/sbin", "/usr/bin", "/sbin", "/bin")  # fmt: skip
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class KubeletError(AssertionError):
    """A pod could not run as its spec says; the message names the pod, container and step."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is ``$``, an
    undefined reference stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def _field(pod: dict[str, Any], path: str) -> str:
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if found:
        return str((metadata.get(found.group(1)) or {}).get(found.group(2), ""))
    raise KubeletError(f"fieldRef {path!r}: not a field this kubelet knows")


@dataclass
class Container:
    """One container of a running pod: its spec, where its output goes, its process."""

    spec: dict[str, Any]
    log: Path
    native_sidecar: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Pod:
    """A pod the kubelet runs: its object (as in KMock), namespace, volumes and containers."""

    node: Node
    obj: dict[str, Any]
    netns: str
    root: Path
    init: list[Container] = field(default_factory=list)
    apps: list[Container] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)
    ready: bool = False
    terminating: bool = False
    phase: str = "Pending"

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def ip(self) -> str:
        return str(self.obj["status"]["podIP"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("labels") or {})

    def container(self, name: str) -> Container:
        return next(c for c in [*self.init, *self.apps] if c.name == name)

    # --- starting ---------------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Volumes, init containers in order (native sidecars up and started), then the apps;
        returns once they are started (see :meth:`wait_ready`)."""
        self._volumes()
        for container in self.init:
            if container.native_sidecar:
                self._launch(container)
                self._probe_until(container, "startupProbe", timeout)
                continue
            self._launch(container)
            assert container.proc is not None
            try:
                code = container.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise KubeletError(f"{self.name}: init container {container.name} still runs "
                                   f"after {timeout:g}s:\n{container.output()}") from None  # fmt: skip
            if code != 0:
                raise KubeletError(f"{self.name}: init container {container.name} exited {code}:"
                                   f"\n{container.output()}")  # fmt: skip
        self.phase = "Running"
        self.node.write_pod(self)
        for container in self.apps:
            self._launch(container)
            hook = (container.spec.get("lifecycle") or {}).get("postStart")
            if hook:
                code, output = self.exec_hook(container, hook, timeout)
                if code != 0:
                    raise KubeletError(f"{self.name}: postStart of {container.name} exited "
                                       f"{code}: {output}")  # fmt: skip

    def wait_ready(self, timeout: float) -> None:
        """Every readiness probe passed once: the pod is ready, and its endpoints say so."""
        for container in [*self.init, *self.apps]:
            if container.native_sidecar or container in self.apps:
                self._probe_until(container, "readinessProbe", timeout)
        self.ready = True
        self.node.write_pod(self)
        self.node.publish_endpoints(self.namespace)

    def _volumes(self) -> None:
        pod_spec = self.obj["spec"]
        for volume in pod_spec.get("volumes") or []:
            path = self.root / "volumes" / volume["name"]
            path.mkdir(parents=True)
            self.volumes[volume["name"]] = path
            if "emptyDir" in volume:
                path.chmod(0o777)
            elif "configMap" in volume:
                self._files(path, self.node.read("v1", "configmaps", self.namespace,
                                                 volume["configMap"]["name"]), volume["configMap"])  # fmt: skip
            elif "secret" in volume:
                self._files(path, self.node.read("v1", "secrets", self.namespace,
                                                 volume["secret"]["secretName"]), volume["secret"])  # fmt: skip
            elif "projected" in volume:
                files = {}
                for source in volume["projected"]["sources"]:
                    token = source.get("serviceAccountToken")
                    if token is None:
                        raise KubeletError(f"{self.name}: projected source {source}: not known")
                    files[token["path"]] = self.node.tokens.token(
                        self.namespace, pod_spec.get("serviceAccountName", "default"), self.name,
                        (token.get("audience", "https://kubernetes.default.svc"),),
                        token.get("expirationSeconds", 3600),
                    )  # fmt: skip
                self._write(path, files, volume["projected"].get("defaultMode", 0o644))
            else:
                raise KubeletError(f"{self.name}: volume {volume['name']}: kind not known")

    @staticmethod
    def _write(path: Path, files: Mapping[str, str], mode: int) -> None:
        """The files of a ConfigMap, Secret or projected volume as the kubelet's atomic writer
        lays them out: in a timestamped directory that ``..data`` links to, each file a link
        through ``..data``."""
        stamp = path / time.strftime("..%Y_%m_%d_%H_%M_%S.000000000", time.gmtime())
        stamp.mkdir()
        for key, value in files.items():
            (stamp / key).write_text(value)
            (stamp / key).chmod(mode)
            (path / key).symlink_to(f"..data/{key}")
        (path / "..data").symlink_to(stamp.name)

    def _files(self, path: Path, obj: dict[str, Any], source: dict[str, Any]) -> None:
        data = dict(obj.get("data") or {})
        if obj.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        self._write(path, data, source.get("defaultMode", 0o644))

    def _environment(self, container: Container) -> dict[str, str]:
        variables: dict[str, str] = {}
        for source in container.spec.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "configmaps" if "configMapRef" in source else "secrets"
            variables.update(self.node.read("v1", kind, self.namespace, ref["name"]).get("data")
                             or {})  # fmt: skip
        for item in container.spec.get("env") or []:
            if "value" in item:
                variables[item["name"]] = expand(str(item["value"]), variables)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                variables[item["name"]] = _field(
                    self.obj, item["valueFrom"]["fieldRef"]["fieldPath"]
                )
            elif "configMapKeyRef" in (item.get("valueFrom") or {}):
                ref = item["valueFrom"]["configMapKeyRef"]
                data = self.node.read("v1", "configmaps", self.namespace, ref["name"])["data"]
                variables[item["name"]] = data[ref["key"]]
            else:
                raise KubeletError(f"{self.name}/{container.name}: env {item['name']}: source "
                                   "not known")  # fmt: skip
        return variables

    def _command(self, container: Container, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        """The host command that runs ``argv`` as ``container`` would (namespace, mounts,
        user, capabilities), and its environment."""
        spec, pod_security = container.spec, self.obj["spec"].get("securityContext") or {}
        security = spec.get("securityContext") or {}
        uid = security.get("runAsUser", pod_security.get("runAsUser", 0))
        gid = security.get("runAsGroup", pod_security.get("runAsGroup", uid))
        variables = self._environment(container)
        argv = [expand(part, variables) for part in argv]
        env = {"PATH": ":".join(PATH_DIRS), "HOME": "/", "HOSTNAME": self.name, **variables}
        script = ["mount -t tmpfs -o mode=755 tmpfs /run"]
        for mount in spec.get("volumeMounts") or []:
            source, target = self.volumes[mount["name"]], mount["mountPath"]
            if not (target.startswith(("/run/", "/var/run/")) or Path(target).is_dir()):
                raise KubeletError(f"{self.name}/{container.name}: mountPath {target}: only "
                                   "/run paths and existing directories can be mounted here")  # fmt: skip
            script.append(f"mkdir -p {shlex.quote(target)}")
            script.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(target)}")
            if mount.get("readOnly"):
                script.append(f"mount -o remount,bind,ro {shlex.quote(target)}")
        workdir = spec.get("workingDir") or str(self.node.images[spec["image"]])
        script.append(f"cd {shlex.quote(workdir)}")
        if uid == 0:
            added = [c.lower() for c in (security.get("capabilities") or {}).get("add") or []]
            bounding = ",".join(["-all", *(f"+{c}" for c in added)]) if added else "+all"
            privileges = ["setpriv", f"--bounding-set={bounding}"]
        else:
            privileges = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                          "--inh-caps=-all,+dac_read_search",
                          "--ambient-caps=-all,+dac_read_search"]  # fmt: skip
        script.append("exec " + shlex.join([*privileges, "--", *argv]))
        host = ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
                "private", "--", "sh", "-ec", " && ".join(script)]  # fmt: skip
        return host, env

    def _launch(self, container: Container) -> None:
        spec = container.spec
        argv = [*(spec.get("command") or []), *(spec.get("args") or [])]
        if not argv:
            raise KubeletError(f"{self.name}/{container.name}: no command (images have none here)")
        host, env = self._command(container, argv)
        with container.log.open("ab") as log:
            container.proc = subprocess.Popen(host, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL)  # fmt: skip

    def exec_hook(
        self, container: Container, hook: dict[str, Any], timeout: float
    ) -> tuple[int, str]:
        """Run a lifecycle hook (``exec``) as the container; its exit code and output."""
        if "exec" not in hook:
            raise KubeletError(f"{self.name}/{container.name}: hook {hook}: only exec is known")
        host, env = self._command(container, list(hook["exec"]["command"]))
        done = subprocess.run(host, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    # --- probes -----------------------------------------------------------------------------

    def _port(self, port: Any) -> int:
        if isinstance(port, int):
            return port
        for container in [*self.init, *self.apps]:
            for declared in container.spec.get("ports") or []:
                if declared.get("name") == port:
                    return int(declared["containerPort"])
        raise KubeletError(f"{self.name}: probe port {port!r} is not a container port")

    def probe(self, probe: dict[str, Any]) -> bool:
        """One probe from the host to the pod's address, as the kubelet sends it."""
        timeout = float(probe.get("timeoutSeconds", 1)) + 2  # the machine is shared
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{self.ip}:{self._port(get['port'])}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as answer:
                    return 200 <= answer.status < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in probe:
            try:
                socket.create_connection((self.ip, self._port(probe["tcpSocket"]["port"])),
                                         timeout=timeout).close()  # fmt: skip
                return True
            except OSError:
                return False
        raise KubeletError(f"{self.name}: probe {probe}: only httpGet and tcpSocket are known")

    def _probe_until(self, container: Container, kind: str, timeout: float) -> None:
        probe = container.spec.get(kind)
        if probe is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if container.proc is not None and container.proc.poll() is not None:
                raise KubeletError(f"{self.name}/{container.name} exited {container.proc.returncode} "
                                   f"before its {kind} passed:\n{container.output()}")  # fmt: skip
            if self.probe(probe):
                return
            time.sleep(min(float(probe.get("periodSeconds", 10)), 0.2))
        raise KubeletError(f"{self.name}/{container.name}: {kind} did not pass within "
                           f"{timeout:g}s:\n{container.output()}")  # fmt: skip

    # --- stopping ---------------------------------------------------------------------------

    def _stop(self, container: Container, grace: float, hooks: list[tuple[str, int, str]]) -> None:
        if container.proc is None or container.proc.poll() is not None:
            return
        pre_stop = (container.spec.get("lifecycle") or {}).get("preStop")
        if pre_stop:
            code, output = self.exec_hook(container, pre_stop, grace)
            hooks.append((container.name, code, output))
        container.proc.send_signal(signal.SIGTERM)
        try:
            container.proc.wait(grace)
        except subprocess.TimeoutExpired:
            container.proc.kill()
            container.proc.wait()

    def _stop_sidecars(self, grace: float, hooks: list[tuple[str, int, str]]) -> None:
        for container in reversed([c for c in self.init if c.native_sidecar]):
            self._stop(container, grace, hooks)

    def delete(self) -> list[tuple[str, int, str]]:
        """Delete the pod as the kubelet does (see the module's docstring); the preStop hooks
        that ran: (container, exit code, output)."""
        grace = float(self.obj["spec"].get("terminationGracePeriodSeconds", 30))
        self.terminating = True
        self.obj["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime())  # fmt: skip
        self.node.write_pod(self)
        self.node.publish_endpoints(self.namespace)
        hooks: list[tuple[str, int, str]] = []
        for container in self.apps:
            self._stop(container, grace, hooks)
        self._stop_sidecars(grace, hooks)
        self.node.remove(self)
        return hooks

    def wait_completed(self, timeout: float) -> list[tuple[str, int, str]]:
        """A pod whose app containers run to completion (a Job's): wait for them, stop the
        sidecars; the phase is Succeeded when each app container exited 0. The hooks run."""
        for container in self.apps:
            assert container.proc is not None
            container.proc.wait(timeout)
        codes = [c.proc.returncode for c in self.apps if c.proc is not None]
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        hooks: list[tuple[str, int, str]] = []
        self._stop_sidecars(float(self.obj["spec"].get("terminationGracePeriodSeconds", 30)), hooks)
        self.node.write_pod(self)
        self.node.publish_endpoints(self.namespace)
        return hooks
