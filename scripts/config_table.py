"""Print the configuration table of docs/CONFIG.md, generated from schemas/config.schema.yaml
(itself generated from exoflow/params.py): one row per key, its default where there is one,
and its description.

    python scripts/config_table.py      # tests/test_params.py checks docs/CONFIG.md holds this
"""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def rows(schema: dict) -> list[tuple[str, str, str]]:
    out: list = []

    def walk(prefix: str, node: dict):
        if "properties" in node:
            if prefix:
                out.append((prefix, "", node.get("description", "")))
            for key, sub in node["properties"].items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
            return
        default = f"`{json_word(node['default'])}`" if "default" in node else ""
        out.append((prefix, default, node.get("description", "")))

    walk("", schema)
    return out


def json_word(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def table(schema: dict) -> str:
    lines = ["| key | default | what |", "| --- | --- | --- |"]
    for key, default, desc in rows(schema):
        lines.append(f"| `{key}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())), end="")
