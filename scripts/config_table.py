"""Print the configuration table of docs/CONFIG.md, generated from schemas/config.schema.yaml
(itself generated from exoflow/config/): one row per key, its default where there is one,
and its description.

    python scripts/config_table.py            # tests/test_params.py checks docs/CONFIG.md holds it
    python scripts/config_table.py --write    # rewrite the table in docs/CONFIG.md
"""

import json
import sys
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
        for alt in node.get("oneOf", []):  # a loss's own hyperparameters
            for key, sub in alt.get("properties", {}).items():
                if key != "name":
                    walk(f"{prefix}.{key}", sub)

    walk("", schema)
    return out


def json_word(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def table(schema: dict) -> str:
    lines = ["| key | default | what |", "| --- | --- | --- |"]
    for key, default, desc in rows(schema):
        lines.append(f"| `{key}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


START, END = "<!-- config-table: scripts/config_table.py -->\n", "<!-- /config-table -->"

if __name__ == "__main__":
    text = table(yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text()))
    if "--write" in sys.argv[1:]:
        doc = ROOT / "docs" / "CONFIG.md"
        head, rest = doc.read_text().split(START, 1)
        doc.write_text(head + START + text + END + rest.split(END, 1)[1])
    else:
        print(text, end="")
