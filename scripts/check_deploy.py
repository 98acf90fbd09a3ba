#!/usr/bin/env python3
"""deploy/ agrees with the code, or one `file:line: problem` per disagreement and exit status 1. Checked:
the compose Kafka image tag is deploy/kafka/pom.xml's <kafka.version>; every FRETFLOW_* name in deploy/ is
mentioned under src/ or crates/; no `step-*` checkpoint names; the compose `command:` of each fretflow
service is a subcommand of target/debug/fretflow with flags from its --help (skipped with a notice without
the binary); /src/.venv paths exist in ./.venv and `llm` loads the GGUF `models-init` copies; and
deploy/cluster/*.toml parse. Run: python3 scripts/check_deploy.py (`make check` does).
"""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
BIN = ROOT / "target" / "debug" / "fretflow"
SKIP_DIRS = {"data", "libs", "logs"}  # Kafka's jars and logs, the user's corpus: not ours to check
problems = []


def problem(path: Path, line: int, message: str) -> None:
    problems.append(f"{path.relative_to(ROOT)}:{line}: {message}")


def lines(path: Path):
    return enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)


def deploy_files():
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and not SKIP_DIRS & set(path.relative_to(DEPLOY).parts[:-1]):
            yield path


def check_kafka_version() -> None:
    pom = DEPLOY / "kafka" / "pom.xml"
    want = next(((n, m[1]) for n, text in lines(pom) if (m := re.search(r"<kafka\.version>(.+?)<", text))), None)
    if want is None:
        return problem(pom, 1, "no <kafka.version> property")
    for n, line in lines(COMPOSE):
        if (m := re.search(r"image:\s*[\"']?apache/kafka:([^\s\"']+)", line)) and m[1] != want[1]:
            problem(COMPOSE, n, f"Kafka image apache/kafka:{m[1]}, but deploy/kafka/pom.xml:{want[0]} pins {want[1]}")


def check_env_names() -> None:
    files = [p for top in ("src", "crates") for p in (ROOT / top).rglob("*") if p.is_file()]
    code = {name for p in files for name in re.findall(r"FRETFLOW_\w*", p.read_text(errors="replace"))}
    for path in deploy_files():
        for n, line in lines(path):
            for name in re.findall(r"\bFRETFLOW_\w*", line):  # `FRETFLOW_KAFKA_*` stands for a prefix
                if name not in code and not (name.endswith("_") and any(c.startswith(name) for c in code)):
                    problem(path, n, f"{name} is not mentioned by any file under src/ or crates/")


def check_checkpoint_names() -> None:
    for path in deploy_files():
        for n, line in lines(path):
            if re.search(r"\bstep-(\*|\d|<|\{)", line):
                problem(path, n, "`step-*` checkpoints do not exist: the trainer writes checkpoint-<8-digit step>/")


def compose_commands():
    """(line, service, argv) of each `command:` of a service that runs the fretflow image (not overridden)."""
    top, service, start, buffer, entries = None, None, 0, "", {}
    for n, line in lines(COMPOSE):
        if line[:1].strip() and not line.startswith("#"):  # a top-level key: `services:`, `volumes:`, ...
            top, service = line.split(":")[0], None
            continue
        if top == "services" and (m := re.match(r"  ([\w.-]+):\s*$", line)):
            service = m[1]
            entries[service] = {"fretflow": False, "entrypoint": False, "commands": []}
        if service is None:
            continue
        entry = entries[service]
        entry["fretflow"] |= bool(re.match(r"\s+(<<: \*fretflow|image:\s*fretflow:)", line))
        entry["entrypoint"] |= bool(re.match(r"\s+entrypoint:", line))
        if m := re.match(r"\s+command:\s*(.*)", line):
            start, buffer = n, m[1]
            if not buffer:
                problem(COMPOSE, n, f"service {service}: write `command:` as a [\"...\", ...] list")
        elif buffer:
            buffer += " " + line.strip()
        if buffer and buffer.count("[") == buffer.count("]"):
            try:
                entry["commands"].append((start, json.loads(buffer)))
            except json.JSONDecodeError:
                problem(COMPOSE, start, f"service {service}: `command:` is not a flow list of quoted strings")
            buffer = ""
    for name, entry in entries.items():
        if entry["fretflow"] and not entry["entrypoint"]:
            yield from ((n, name, argv) for n, argv in entry["commands"])


def help_text(words):
    return subprocess.run([str(BIN), *words, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout


def subcommands(text: str):
    section = text.split("Commands:", 1)[1].split("\n\n", 1)[0] if "Commands:" in text else ""
    return {line.split()[0] for line in section.splitlines() if line.strip()}


def check_commands() -> None:
    try:
        top = help_text([])
    except (OSError, subprocess.SubprocessError) as e:
        print(f"check_deploy: notice: skipping the compose command check ({BIN.relative_to(ROOT)}: {e})")
        return
    for n, service, argv in compose_commands():
        words, known, text = [], subcommands(top), top
        for word in argv[:2]:
            if not known:
                break
            if word not in known:
                problem(COMPOSE, n, f"service {service}: `fretflow {' '.join(words + [word])}` is not a command")
                break
            words.append(word)
            text = help_text(words)
            known = subcommands(text)
        else:
            for flag in (a.split("=", 1)[0] for a in argv if re.match(r"--?[A-Za-z]", a)):
                if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                    problem(COMPOSE, n, f"service {service}: `fretflow {' '.join(words)}` has no flag {flag}")


def check_venv_paths() -> None:
    venv = (ROOT / ".venv").is_dir() or print("check_deploy: notice: no .venv here, skipping the /src/.venv check")
    copied = {Path(p).name for _, text in lines(COMPOSE) for p in re.findall(r"/src/\.venv/\S+?\.gguf", text)}
    for n, line in lines(COMPOSE):
        for path in re.findall(r"/src/(\.venv/[^\s\"',;]+)", line):
            if venv and not (ROOT / path).exists():
                problem(COMPOSE, n, f"/src/{path} does not exist in the image's .venv (checked: ./{path})")
        for name in re.findall(r"/models/([^\s\"']+\.gguf)", line):
            if name not in copied:
                problem(COMPOSE, n, f"/models/{name} is not a GGUF that a service copies out of /src/.venv")


def check_toml() -> None:
    for path in sorted((DEPLOY / "cluster").glob("*.toml")):
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            line = int(m[1]) if (m := re.search(r"line (\d+)", str(e))) else 1
            problem(path, line, f"not valid TOML: {e}")


for check in (check_kafka_version, check_env_names, check_checkpoint_names, check_commands, check_venv_paths,
              check_toml):
    check()
print("\n".join(problems) or "check_deploy: deploy/ agrees with the code")
sys.exit(1 if problems else 0)
