"""Test-side helpers for the e2e cluster: kubectl, apply, waits and a failure dump.

Everything goes through the cluster's own kubectl (built with it) and the admin kubeconfig, as a
person at a terminal would; waits poll real object state and fail with what they last saw.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubectlError(RuntimeError):
    pass


@dataclass(frozen=True)
class Kube:
    bin_dir: Path
    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        import os

        # kubectl's discovery cache is keyed by the API server's address, which every cluster shares: a
        # cache in ~/.kube outlives the cluster and serves the previous run's CRDs (names, categories).
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), PATH=f"{self.bin_dir}:{os.environ['PATH']}",
                    KUBECACHEDIR=str(self.kubeconfig.parent / "kubectl-cache"))

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(self.bin_dir / "kubectl"), *args], input=stdin, capture_output=True,
                             text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def apply(self, namespace: str, *docs: dict[str, Any]) -> None:
        self.kubectl("-n", namespace, "apply", "-f", "-",
                     stdin=yaml.safe_dump_all(list(docs), sort_keys=False))

    def get(self, namespace: str, kind: str, name: str) -> dict[str, Any]:
        out = self.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
        obj: dict[str, Any] = json.loads(out)
        return obj

    def get_or_none(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        res = self.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = 180,
                   interval: float = 1.0) -> Any:
        """Poll `check` until it returns something truthy; fail with the last value or error."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
                last = value
            except (KubectlError, KeyError, subprocess.TimeoutExpired) as exc:
                last = exc
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")

    def wait_condition(self, namespace: str, kind: str, name: str, condition: str,
                       timeout: float = 180) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(namespace, kind, name)
            for c in obj.get("status", {}).get("conditions", []) or []:
                if c["type"] == condition and c["status"] == "True":
                    return obj
            return None

        result: dict[str, Any] = self.wait_until(f"{kind}/{name} {condition} in {namespace}", check, timeout)
        return result

    def job_outcome(self, namespace: str, name: str, timeout: float = 180) -> str:
        """Wait for a Job to finish; return "Complete" or "Failed"."""
        def check() -> str | None:
            for c in self.get(namespace, "job", name).get("status", {}).get("conditions", []) or []:
                if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                    return str(c["type"])
            return None

        outcome: str = self.wait_until(f"job/{name} to finish in {namespace}", check, timeout)
        return outcome

    def dump(self, namespace: str) -> str:
        """Events, pod statuses and container logs of a namespace, for a failed test's report."""
        parts = []
        for args in (("get", "events", "--sort-by=.lastTimestamp"), ("get", "all,pvc", "-o", "wide"),
                     ("describe", "pods")):
            res = self.kubectl("-n", namespace, *args, check=False)
            parts.append(f"$ kubectl -n {namespace} {' '.join(args)}\n{res.stdout}{res.stderr}")
        pods = self.kubectl("-n", namespace, "get", "pods", "-o", "json", check=False)
        if pods.returncode == 0:
            for pod in json.loads(pods.stdout)["items"]:
                for c in pod["spec"].get("containers", []):
                    name = pod["metadata"]["name"]
                    res = self.kubectl("-n", namespace, "logs", name, "-c", c["name"], "--tail=100",
                                       check=False)
                    parts.append(f"$ kubectl logs {name} -c {c['name']}\n{res.stdout}{res.stderr}")
        return "\n".join(parts)
