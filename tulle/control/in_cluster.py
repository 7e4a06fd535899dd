"""The control plane with ``--registry kubernetes``: the cluster's registry, config, CA Secret,
service-account tokens and leader election wired in, and the cluster's bursts of changes turned
into one change (and one push) each; only the leader writes status, Events and the CA's Secret."""

from __future__ import annotations

import asyncio
import logging

from tulle.control.changes import Changes

log = logging.getLogger(__name__)

KUBE_SYNC_SECONDS = 30.0
"""How long ``--registry kubernetes`` waits at start for the cluster's first full read."""


class InCluster(Changes):
    """The control plane's Kubernetes side (lightkube loads only when it starts)."""

    async def _start_kube(self) -> None:
        """``--registry kubernetes``: watch the cluster and wait (a while) for its first full
        read, so the config is validated against the cluster's services."""
        # lightkube (and its HTTP client) load only with --registry kubernetes.
        from tulle.control import kube_identity  # noqa: PLC0415
        from tulle.control.kube_config import KubernetesConfig  # noqa: PLC0415
        from tulle.control.kube_registry import KubernetesRegistry  # noqa: PLC0415

        self.kube = kube = KubernetesRegistry(self.kubeconfig, self.kube_context)
        from tulle.control.kube_ca import ClusterCa  # noqa: PLC0415

        self.cluster_ca = ClusterCa(
            self.kubeconfig, self.kube_context, self.namespace, self.state_dir
        )
        self.cluster_ca.may_write = lambda: self.leadership.leading
        self.cluster_ca.on_reload = self._bundle_changed  # the leader rotated the roots
        self.leadership.listen(self._leadership_changed)
        self.leadership.start(self.kubeconfig, self.kube_context, self.namespace)
        self.workloads = kube_identity.connect(self.tokens, self.kubeconfig, self.kube_context)
        self.node_auth.tokens = self.workloads
        self.kube_config = cluster_config = KubernetesConfig(kube.client)
        cluster_config.on_update = self._cluster_config_updated
        cluster_config.start()
        first = asyncio.Event()
        kube.on_update = first.set
        kube.start()
        try:
            await asyncio.wait_for(first.wait(), KUBE_SYNC_SECONDS)
        except TimeoutError:
            log.warning(
                "Kubernetes registry (%s): no full read within %.0fs; starting without it, it "
                "joins when the watches catch up", kube.client.server, KUBE_SYNC_SECONDS,
            )  # fmt: skip
        kube.take()
        kube.on_update = self._kube_updated

    def _kube_updated(self) -> None:
        """A burst of cluster changes ended: one change (and so one push) for all of it."""
        task = asyncio.create_task(self._take_kube_update())
        self._kube_tasks.add(task)
        task.add_done_callback(self._kube_tasks.discard)

    def _cluster_config_updated(self) -> None:
        """The cluster's config resources changed (a burst of them): judge them as one change."""
        task = asyncio.create_task(self._take_cluster_config())
        self._kube_tasks.add(task)
        task.add_done_callback(self._kube_tasks.discard)

    async def _take_cluster_config(self) -> None:
        assert self.kube_config is not None
        documents = self.kube_config.take()
        if documents is None:
            return
        result = await self._change(self.config.set_cluster, documents)
        if result.changed:
            log.info("config from the cluster changed; pushing")
            self.changed()
        if not self.leadership.leading:  # the leader writes status and Events
            self._unreported = result
            return
        await self.kube_config.report(result)

    def _leadership_changed(self, leading: bool) -> None:
        """This replica now leads (or no longer does): the leader's writes start here."""
        if self.cluster_ca is not None:
            self.cluster_ca.leading_changed(leading)
        if leading and self._unreported is not None and self.kube_config is not None:
            result, self._unreported = self._unreported, None
            task = asyncio.create_task(self.kube_config.report(result))
            self._kube_tasks.add(task)
            task.add_done_callback(self._kube_tasks.discard)

    async def _take_kube_update(self) -> None:
        if await self._change(self._kube_take):
            self.changed()
        if self.cluster_ca is not None and self.kube is not None:
            self.cluster_ca.namespaces_changed(self.kube.namespaces())

    def _kube_take(self) -> bool:
        assert self.kube is not None
        hosts = self.kube.hosts()
        if not self.kube.take():
            return False
        if self.kube.hosts() != hosts:  # config is checked against the hosts, nothing else
            self.config.revalidate()
        return True
