"""``forge deploy:k8s``: a Deployment and a Service for the app, in one file.

The manifest holds only what differs per cluster: where to listen,
``APP_ENV=production``, the Secret's keys (``DATABASE_URL``, an optional
``REDIS_URL`` for the cache, and ``[env]`` keys whose names look secret) and
the variables forge.toml reads through ``${VAR}``. Plain ``[env]`` values stay
in forge.toml, which the executable carries, so that editing them there takes
effect with the next image.
"""

from __future__ import annotations

import math
from typing import Any

from .._config import Settings
from .._config.models import GRACE_MARGIN
from .common import (
    APP_UID,
    env_entries,
    header,
    k8s_name,
    label_value,
    ready_timeout_seconds,
)
from .files import to_yaml

LIVENESS_PERIOD = 10
READINESS_PERIOD = 2
RESERVED = ("HOST", "PORT", "APP_ENV", "DATABASE_URL", "REDIS_URL", "FORGE_SHUTDOWN__DELAY")

MIN_DELAY = 5.0
"""The least ``[shutdown].delay`` a pod gets, in seconds.

Kubernetes takes a terminating pod out of the Service's endpoints and sends
SIGTERM at the same time; kube-proxy and ingress controllers learn of it a few
seconds later, and traffic still arrives meanwhile. With no preStop hook the
delay is what keeps those requests from being refused.
"""


def path(settings: Settings) -> str:
    """Where the manifests go, relative to the output directory."""
    return f"k8s/{k8s_name(settings)}.yaml"


def default_image(settings: Settings) -> str:
    """``<app.name>:<app.version>``, as `docker build -t` would be told."""
    return f"{k8s_name(settings)}:{label_value(settings.app.version)}"


def secret_name(settings: Settings) -> str:
    return f"{k8s_name(settings)}-secrets"


def shutdown_delay(settings: Settings) -> float:
    """The pod's ``[shutdown].delay``: forge.toml's, raised to `MIN_DELAY` if shorter."""
    return max(settings.shutdown.delay, MIN_DELAY)


def pod_grace_seconds(settings: Settings) -> int:
    """``terminationGracePeriodSeconds``: the pod's delay, the drain bound and a margin."""
    return settings.shutdown.grace_seconds(shutdown_delay(settings))


def readiness_timing(settings: Settings) -> tuple[int, int]:
    """The readiness probe's ``(periodSeconds, timeoutSeconds)``.

    The timeout lets /_api/ready answer (it waits up to ``[database].ready_timeout``),
    and Kubernetes requires it not to exceed the period.
    """
    timeout = ready_timeout_seconds(settings)
    return max(READINESS_PERIOD, timeout), timeout


def liveness_failure_threshold(settings: Settings) -> int:
    """Failures in a row before a restart: more than a whole drain's worth.

    Past ``[shutdown].delay`` a draining node refuses new requests, probes
    included, until it exits; liveness must not restart it in the meantime.
    """
    return max(3, math.ceil(pod_grace_seconds(settings) / LIVENESS_PERIOD) + 1)


def _env(settings: Settings) -> list[dict[str, Any]]:
    secret = secret_name(settings)

    def from_secret(variable: str, *, optional: bool = False) -> dict[str, Any]:
        reference: dict[str, Any] = {"name": secret, "key": variable}
        if optional:
            reference["optional"] = True
        return {"name": variable, "valueFrom": {"secretKeyRef": reference}}

    env: list[dict[str, Any]] = [
        {"name": "HOST", "value": "0.0.0.0"},
        {"name": "PORT", "value": str(settings.server.port)},
        {"name": "APP_ENV", "value": "production"},
        from_secret("DATABASE_URL"),
        # The cache's Redis when the Secret has it; without it, the database's table.
        from_secret("REDIS_URL", optional=True),
    ]
    if settings.shutdown.delay < MIN_DELAY:
        env.append({"name": "FORGE_SHUTDOWN__DELAY", "value": f"{shutdown_delay(settings):g}s"})
    seen = set(RESERVED)
    for entry in env_entries(settings):
        # A plain value stays in forge.toml: copied here, it would hide later edits there.
        if entry.variable in seen or not (entry.secret or entry.reference):
            continue
        seen.add(entry.variable)
        env.append(
            from_secret(entry.variable)
            if entry.secret
            else {"name": entry.variable, "value": entry.value}
        )
    return env


def secret_keys(settings: Settings) -> list[str]:
    """The keys the Deployment reads from the Secret ``<app.name>-secrets``."""
    return [
        item["name"]
        for item in _env(settings)
        if "valueFrom" in item and "secretKeyRef" in item["valueFrom"]
    ]


def manifests(settings: Settings, *, image: str | None = None, replicas: int = 2) -> str:
    """The Deployment and its Service as one multi-document YAML file."""
    name = k8s_name(settings)
    port = settings.server.port
    selector = {"app.kubernetes.io/name": name}
    labels = {**selector, "app.kubernetes.io/version": label_value(settings.app.version)}
    http = {"port": "http"}
    readiness_period, readiness_timeout = readiness_timing(settings)

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": pod_grace_seconds(settings),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": APP_UID,
                        "runAsGroup": APP_UID,
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": image or default_image(settings),
                            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
                            "env": _env(settings),
                            "readinessProbe": {
                                "httpGet": {"path": "/_api/ready", **http},
                                "periodSeconds": readiness_period,
                                "timeoutSeconds": readiness_timeout,
                                "failureThreshold": 1,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/_api/health", **http},
                                "periodSeconds": LIVENESS_PERIOD,
                                "timeoutSeconds": 3,
                                "failureThreshold": liveness_failure_threshold(settings),
                            },
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }

    delay, drain = shutdown_delay(settings), settings.shutdown.drain_timeout
    if settings.shutdown.delay < MIN_DELAY:
        raised = [
            f"# forge.toml's [shutdown].delay ({settings.shutdown.delay:g}s) is shorter than the"
            f" {MIN_DELAY:g}s endpoints",
            "# take to notice a pod left: FORGE_SHUTDOWN__DELAY below raises it for the pods.",
        ]
    else:
        raised = []
    keys = secret_keys(settings)
    intro = [
        *header("deploy:k8s"),
        "#",
        f"# Before `kubectl apply -f {path(settings)}`, create the Secret it reads",
        "# (values are never written here):",
        f"#   kubectl create secret generic {secret_name(settings)}"
        + "".join(f" \\\n#     --from-literal={key}=..." for key in keys),
        "#",
        "# Rolling updates: maxUnavailable 0 starts a new pod and waits until it is",
        "# ready (migrated, registered) before stopping an old one.",
        "# No preStop sleep: on SIGTERM the runtime turns /_api/ready to 503 and keeps",
        f"# serving for [shutdown].delay ({delay:g}s) while endpoints learn it left, then",
        f"# finishes requests in flight for up to [shutdown].drain_timeout ({drain:g}s).",
        *raised,
        f"# terminationGracePeriodSeconds = ceil(delay + drain_timeout) + {GRACE_MARGIN}"
        f" = {pod_grace_seconds(settings)}: raise it",
        "# along with either.",
        "# Liveness (/_api/health never touches the database, so an outage does not",
        "# restart pods) tolerates a whole drain before restarting a pod.",
        "# [env] values stay in forge.toml, which the executable carries: edit them there.",
        "# Here are only keys that look secret (from the Secret, as FORGE_ENV__<KEY>) and",
        '# variables forge.toml reads as KEY = "${VAR}". FORGE_ENV__<KEY> overrides a key',
        "# for this cluster alone.",
        "",
    ]
    return "\n".join(intro) + to_yaml(deployment, service)
