"""Regenerate schemas/helm-values.schema.json from the official chart's values.schema.json.

    tar xzf tests/chart/airflow-1.22.0.tgz -O airflow/values.schema.json >/tmp/chart.schema.json
    python tools/helm_values_schema.py /tmp/chart.schema.json schemas/helm-values.schema.json

tests/test_values_schema_strict.py walks the chart package's own values.schema.json to prove
that our schema refuses at least what the chart refuses.

Our schema = our own rules for the keys the template emits (below), plus every other key the
chart has at the levels we describe, typed like the chart, so that an unknown key is an error
with a "did you mean" suggestion and a legitimate chart key passes. Run it when the chart
version changes; tests/test_helm_schema_agreement.py then checks every path against the chart.
"""

import json
import sys

CHART = json.load(open(sys.argv[1]))
D = CHART["definitions"]


def resolve(n):
    while (
        "$ref" in n
        and len([k for k in n if k not in ("description", "default", "x-docsSection", "examples")])
        == 1
    ):
        n = D[n["$ref"].split("/")[-1]]
    if "$ref" in n:
        base = dict(D[n["$ref"].split("/")[-1]])
        base.update({k: v for k, v in n.items() if k != "$ref"})
        return base
    return n


def chart_at(path):
    n = CHART
    for k in path:
        n = resolve(n)
        n = n["items"] if k == "[]" else n["properties"][k]
    return resolve(n)


DOCS = ("description", "x-docsSection", "examples", "default", "$comment")
CHART_DEFS = {}  # chart definition name -> our copy, filled as chart_copy meets them


def chart_copy(n):
    """The chart's own rules for a key we do not describe, so `validate` refuses at least what
    helm refuses there (a copy of only the type let an `env` entry the chart refuses pass).
    The chart's definitions (Kubernetes types) are copied once into $defs as chart.<name>."""
    if isinstance(n, list):
        return [chart_copy(x) for x in n]
    if not isinstance(n, dict):
        return n
    out = {}
    for k, v in n.items():
        if k in DOCS:
            continue
        if k == "$ref":
            name = v.split("/")[-1]
            if name not in CHART_DEFS:
                CHART_DEFS[name] = None  # a placeholder first: definitions refer to each other
                CHART_DEFS[name] = chart_copy(D[name])
            out[k] = f"#/$defs/chart.{name}"
        elif k in ("enum", "const", "required", "type", "pattern"):
            out[k] = v
        elif k in ("properties", "patternProperties"):
            out[k] = {name: chart_copy(sub) for name, sub in v.items()}
        else:
            out[k] = chart_copy(v)
    return out


def typed(n):
    return chart_copy(n)


def fill(ours, chart_node):
    chart_node = resolve(chart_node)
    props = dict(ours.get("properties", {}))
    for k, v in chart_node.get("properties", {}).items():
        if k not in props:
            props[k] = typed(v)
    out = dict(ours)
    out["properties"] = dict(sorted(props.items()))
    out.setdefault("type", "object")
    out["additionalProperties"] = False
    return out


def S(*t):
    return {"type": list(t) if len(t) > 1 else t[0]}


STR, BOOL, INT = S("string"), S("boolean"), S("integer")
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def arr(ref):
    return {"type": "array", "items": {"$ref": f"#/$defs/{ref}"}}


defs = {}
defs["capabilities"] = fill(
    {
        "properties": {
            "add": {"type": "array", "items": STR},
            "drop": {"type": "array", "items": STR},
        }
    },
    D["io.k8s.api.core.v1.Capabilities"],
)
defs["seccompProfile"] = fill(
    {
        "properties": {
            "type": {"type": "string", "enum": ["RuntimeDefault", "Localhost", "Unconfined"]},
            "localhostProfile": STR,
        }
    },
    D["io.k8s.api.core.v1.SeccompProfile"],
)
defs["securityContext"] = fill(
    {
        "properties": {
            "runAsUser": {"type": "integer", "minimum": 0},
            "runAsGroup": {"type": "integer", "minimum": 0},
            "runAsNonRoot": BOOL,
            "readOnlyRootFilesystem": BOOL,
            "allowPrivilegeEscalation": BOOL,
            "privileged": BOOL,
            "capabilities": {"$ref": "#/$defs/capabilities"},
            "seccompProfile": {"$ref": "#/$defs/seccompProfile"},
        }
    },
    D["io.k8s.api.core.v1.SecurityContext"],
)
defs["podSecurityContext"] = fill(
    {
        "properties": {
            "runAsUser": {"type": "integer", "minimum": 0},
            "runAsGroup": {"type": "integer", "minimum": 0},
            "fsGroup": {"type": "integer", "minimum": 0},
            "runAsNonRoot": BOOL,
            "seccompProfile": {"$ref": "#/$defs/seccompProfile"},
        }
    },
    D["io.k8s.api.core.v1.PodSecurityContext"],
)
# A container's env (extraContainers) takes any Kubernetes EnvVarSource; a component's env
# (workers.env, ...) only what the chart's schema lists there.
defs["containerEnvVar"] = fill(
    {
        "required": ["name"],
        "properties": {
            "name": STR,
            "value": STR,
            "valueFrom": chart_copy(D["io.k8s.api.core.v1.EnvVarSource"]),
        },
    },
    D["io.k8s.api.core.v1.EnvVar"],
)
_component_env = resolve(CHART["properties"]["workers"]["properties"]["env"]["items"])
defs["envVar"] = fill(
    {
        "required": ["name"],
        "properties": {
            "name": STR,
            "value": STR,
            "valueFrom": chart_copy(_component_env["properties"]["valueFrom"]),
        },
    },
    _component_env,
)
defs["volumeMount"] = fill(
    {
        "required": ["name", "mountPath"],
        "properties": {"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR},
    },
    D["io.k8s.api.core.v1.VolumeMount"],
)
defs["emptyDir"] = fill(
    {
        "properties": {
            "medium": STR,
            "sizeLimit": {
                "type": ["string", "integer"],
                "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$",
            },
        }
    },
    D["io.k8s.api.core.v1.EmptyDirVolumeSource"],
)
defs["pvcSource"] = fill(
    {"required": ["claimName"], "properties": {"claimName": STR, "readOnly": BOOL}},
    D["io.k8s.api.core.v1.PersistentVolumeClaimVolumeSource"],
)
defs["volume"] = fill(
    {
        "required": ["name"],
        "properties": {
            "name": NAME,
            "emptyDir": {"$ref": "#/$defs/emptyDir"},
            "persistentVolumeClaim": {"$ref": "#/$defs/pvcSource"},
        },
    },
    D["io.k8s.api.core.v1.Volume"],
)
defs["resources"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "limits": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "claims": {"type": "array"},
    },
}
defs["container"] = fill(
    {
        "required": ["name"],
        "properties": {
            "name": NAME,
            "image": {"type": "string", "minLength": 1},
            "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
            "command": {"type": "array", "items": STR},
            "args": {"type": "array", "items": STR},
            "env": arr("containerEnvVar"),
            "securityContext": {"$ref": "#/$defs/securityContext"},
            "volumeMounts": arr("volumeMount"),
            "resources": {"$ref": "#/$defs/resources"},
        },
    },
    D["io.k8s.api.core.v1.Container"],
)
defs["componentSecurityContexts"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pod": {"$ref": "#/$defs/podSecurityContext"},
        "container": {"$ref": "#/$defs/securityContext"},
    },
}


def component(path, extra=None):
    node = chart_at(path)
    ours = {"properties": {}}
    have = node.get("properties", {})
    for key, val in {
        "serviceAccount": fill(
            {
                "properties": {
                    "create": BOOL,
                    "name": {"type": ["string", "null"]},
                    "annotations": {"type": "object", "additionalProperties": STR},
                }
            },
            chart_at(path + ["serviceAccount"]),
        )
        if "serviceAccount" in have
        else None,
        "extraContainers": arr("container"),
        "extraInitContainers": arr("container"),
        "extraVolumes": arr("volume"),
        "extraVolumeMounts": arr("volumeMount"),
        "env": arr("envVar"),
        "securityContexts": {"$ref": "#/$defs/componentSecurityContexts"},
        "enabled": BOOL,
        "resources": {"$ref": "#/$defs/resources"},
    }.items():
        if key in have:
            ours["properties"][key] = val
    ours["properties"].update(extra or {})
    return fill(ours, node)


bundle = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "classpath"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "classpath": {
            "type": "string",
            "pattern": "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)+$",
        },
        "kwargs": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        },
        "team_name": {"type": ["string", "null"]},
    },
}

top = {
    "properties": {
        "executor": {"type": "string", "pattern": CHART["properties"]["executor"]["pattern"]},
        "airflowVersion": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+"},
        "defaultAirflowTag": {"type": "string", "minLength": 1},
        "images": fill(
            {
                "properties": {
                    "airflow": fill(
                        {
                            "properties": {
                                "repository": {"type": ["string", "null"]},
                                "tag": {"type": ["string", "null"]},
                                "digest": {"type": ["string", "null"]},
                                "pullPolicy": {
                                    "type": "string",
                                    "enum": ["Always", "IfNotPresent", "Never"],
                                },
                            }
                        },
                        chart_at(["images", "airflow"]),
                    ),
                    "gitSync": fill(
                        {
                            "properties": {
                                "repository": STR,
                                "tag": STR,
                                "pullPolicy": {
                                    "type": "string",
                                    "enum": ["Always", "IfNotPresent", "Never"],
                                },
                            }
                        },
                        chart_at(["images", "gitSync"]),
                    ),
                }
            },
            chart_at(["images"]),
        ),
        "securityContexts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "pod": {"$ref": "#/$defs/podSecurityContext"},
                "containers": {"$ref": "#/$defs/securityContext"},
            },
        },
        "postgresql": fill({"properties": {"enabled": BOOL}}, chart_at(["postgresql"])),
        "data": fill(
            {
                "properties": {
                    "metadataSecretName": {"type": ["string", "null"]},
                    "resultBackendSecretName": {"type": ["string", "null"]},
                }
            },
            chart_at(["data"]),
        ),
        "fernetKeySecretName": {"type": ["string", "null"]},
        "apiSecretKeySecretName": {"type": ["string", "null"]},
        "jwtSecretName": {"type": ["string", "null"]},
        "webserverSecretKeySecretName": {"type": ["string", "null"]},
        "redis": fill({"properties": {"enabled": BOOL}}, chart_at(["redis"])),
        "config": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"type": ["boolean", "integer", "number", "string"]},
            },
            "properties": {
                "core": {
                    "type": "object",
                    "properties": {
                        "dags_folder": {"type": "string", "pattern": "^/"},
                        "load_examples": {"type": ["string", "boolean"]},
                    },
                    "additionalProperties": {"type": ["boolean", "integer", "number", "string"]},
                }
            },
        },
        "secret": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["envName", "secretName"],
                "properties": {
                    "envName": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    "secretName": NAME,
                    "secretKey": STR,
                },
            },
        },
        "dags": fill(
            {
                "properties": {
                    "mountPath": {"type": ["string", "null"]},
                    "gitSync": fill(
                        {
                            "properties": {
                                "enabled": BOOL,
                                "repo": STR,
                                "branch": STR,
                                "ref": STR,
                                "rev": STR,
                                "subPath": STR,
                                "depth": {"type": "integer", "minimum": 0},
                                "sshKeySecret": {"type": ["string", "null"]},
                                "knownHosts": {"type": ["string", "null"]},
                                "credentialsSecret": {"type": ["string", "null"]},
                                "period": {
                                    "type": "string",
                                    "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$",
                                },
                                "wait": {"type": ["integer", "null"]},
                                "recommendedProbeSetting": BOOL,
                                "env": arr("envVar"),
                                "resources": {"$ref": "#/$defs/resources"},
                                "securityContexts": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "container": {"$ref": "#/$defs/securityContext"}
                                    },
                                },
                            }
                        },
                        chart_at(["dags", "gitSync"]),
                    ),
                    "persistence": fill(
                        {
                            "properties": {
                                "enabled": BOOL,
                                "existingClaim": {"type": ["string", "null"]},
                                "accessMode": {
                                    "type": "string",
                                    "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                                },
                                "size": STR,
                                "storageClassName": {"type": ["string", "null"]},
                                "subPath": {"type": ["string", "null"]},
                            }
                        },
                        chart_at(["dags", "persistence"]),
                    ),
                }
            },
            chart_at(["dags"]),
        ),
        "dagProcessor": component(
            ["dagProcessor"], {"dagBundleConfigList": {"type": "array", "items": bundle}}
        ),
        "triggerer": component(["triggerer"]),
        "scheduler": component(["scheduler"]),
        "apiServer": component(["apiServer"]),
        "workers": fill(
            {
                **component(["workers"]),
                "properties": {
                    **component(["workers"])["properties"],
                    "celery": component(["workers", "celery"]),
                    "kubernetes": component(["workers", "kubernetes"]),
                },
            },
            chart_at(["workers"]),
        ),
    }
}
schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://airflow-eks-gitops.invalid/schemas/helm-values.schema.json",
    "title": "helm/values.yaml: our overrides of the official Apache Airflow chart 1.22.0",
    "$comment": "Strict for the keys this template emits; every other key of the chart at those levels is listed with the chart's type, so an unknown key is an error with a suggestion. tests/test_helm_schema_agreement.py checks each path against the chart's values.schema.json.",
}
schema.update(fill(top, CHART))
schema["$defs"] = {**defs, **{f"chart.{name}": node for name, node in sorted(CHART_DEFS.items())}}
with open(sys.argv[2], "w") as out:
    json.dump(schema, out, indent=2)
    out.write("\n")
print(f"wrote {sys.argv[2]}")
if len(sys.argv) > 3:
    CHART_DEFS.clear()
    rules = chart_copy({k: v for k, v in CHART.items() if k != "definitions"})
    rules["$comment"] = (
        "The rules of the Apache Airflow Helm chart 1.22.0's values.schema.json (Apache-2.0, "
        "see NOTICE), prose removed; made by tools/helm_values_schema.py."
    )
    rules["$defs"] = {f"chart.{name}": node for name, node in sorted(CHART_DEFS.items())}
    with open(sys.argv[3], "w") as out:
        json.dump(rules, out, indent=None, separators=(",", ":"), sort_keys=True)
        out.write("\n")
    print(f"wrote {sys.argv[3]}")
