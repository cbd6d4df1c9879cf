"""Recipes: data, training stages and evaluation as data (`aura/recipes/shipped.yaml` and the studies).

One file says what `scripts/run_recipe.sh` synthesises and imports, which manifests it joins, every
`aura train` stage with its overrides, the evaluation commands and which runs become which shipped
checkpoint. The script asks this module for each part (`python -m aura.train.release PART --recipe R --out
OUT`), and the tests resolve the shipped stages' configs from the release recipe, so what ships and what
the script makes cannot drift apart. A study recipe has the same shape and ships nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aura.config import AuraConfig, load_config

RECIPE = Path(__file__).parents[1] / "recipes" / "shipped.yaml"
SECTIONS = ("config", "out", "steps", "synth", "manifests", "base", "stages", "commands", "ship")
# optional: `imports` (folder under {data} -> `aura data import` options and the manifests it writes)


class ReleaseError(ValueError):
    """A release recipe, or a request about it, that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Release:
    """The recipe at `path`, with its placeholders filled for output folder `out` and step counts `steps`."""

    path: Path
    recipe: dict[str, Any]
    out: str
    steps: dict[str, int]

    @classmethod
    def load(
        cls, path: str | Path = RECIPE, out: str | None = None, steps: dict[str, int] | None = None
    ) -> Release:
        path = Path(path)
        recipe = yaml.safe_load(path.read_text())
        missing = [key for key in SECTIONS if key not in (recipe or {})]
        if missing:
            raise ReleaseError(f"{path}: the recipe has no {', '.join(missing)} section.")
        unknown = sorted(set(steps or {}) - set(recipe["steps"]))
        if unknown:
            raise ReleaseError(
                f"--steps {unknown[0]}: no such step count; the recipe has {', '.join(recipe['steps'])}."
            )
        return cls(path, recipe, out or recipe["out"], {**recipe["steps"], **(steps or {})})

    @property
    def data(self) -> str:
        return f"{self.out}/data"

    @property
    def config_file(self) -> Path:
        return self.path.parent / self.recipe["config"]

    def fill(self, value: Any) -> str:
        """One recipe value as text, `{out}`, `{data}` and the step counts replaced."""
        try:
            return str(value).format(out=self.out, data=self.data, **self.steps)
        except KeyError as err:
            raise ReleaseError(f"{self.path}: unknown placeholder {{{err.args[0]}}} in {value!r}.") from None

    def synth(self) -> dict[str, list[str]]:
        """Folder under `data` -> its `aura data synth` options."""
        return {name: [self.fill(v) for v in options] for name, options in self.recipe["synth"].items()}

    def imports(self) -> dict[str, list[str]]:
        """Folder under `data` -> its `aura data import` options (real recorded speech)."""
        return {
            name: [self.fill(v) for v in spec["args"]]
            for name, spec in (self.recipe.get("imports") or {}).items()
        }

    def stages(self) -> dict[str, list[str]]:
        """Run name -> its `aura train` overrides (the shared base first, so the stage's own win), in order."""
        base = [self.fill(v) for v in self.recipe["base"]]
        return {name: base + [self.fill(v) for v in own] for name, own in self.recipe["stages"].items()}

    def stage_config(self, name: str) -> AuraConfig:
        """The config stage `name` trains with: exactly what `aura train` saves as RUN_DIR/config.yaml."""
        return load_config(self.config_file, self.stages()[name])

    def commands(self) -> dict[str, list[str]]:
        """`aura` command (`diagnose:NAME` tells several apart) -> its arguments, run after training."""
        return {name: [self.fill(v) for v in args] for name, args in self.recipe["commands"].items()}

    def ship(self) -> dict[str, str]:
        """Run name -> the checkpoint folder under `aura/checkpoints/` it becomes."""
        return dict(self.recipe["ship"] or {})

    def manifest_paths(self) -> set[str]:
        """Every manifest the recipe produces (synthesised sets, packed sets, the joined or picked ones)."""
        made = {f"{self.data}/{name}/manifest.jsonl" for name in self.recipe["synth"]}
        for name, spec in (self.recipe.get("imports") or {}).items():
            made |= {f"{self.data}/{name}/{manifest}" for manifest in spec["manifests"]}
        for name, spec in self.recipe["manifests"].items():
            made.add(f"{self.data}/{name}/manifest.jsonl" if "pack" in spec else f"{self.data}/{name}")
        return made

    def write_manifests(self) -> None:
        """Pack, join and pick the recipe's combined manifests from the synthesised sets (kept when
        present), in the recipe's order, so a join may use a packed set."""
        from aura.data.manifest import read_manifest, write_manifest
        from aura.data.pack import pack_manifest

        def source(name: str) -> Path:
            folder = Path(self.data) / name
            return folder / "manifest.jsonl" if folder.is_dir() else folder

        for name, spec in self.recipe["manifests"].items():
            target = Path(self.data) / name
            if "pack" in spec:
                if not (target / "manifest.jsonl").is_file():
                    lengths = {k: float(spec[k]) for k in ("min_seconds", "max_seconds") if k in spec}
                    pack_manifest(
                        source(spec["pack"]),
                        target,
                        seed=int(spec.get("seed", 0)),
                        prefix=str(spec.get("prefix", "pack")),
                        **lengths,
                    )
                continue
            if target.is_file():
                continue
            if "join" in spec:
                examples = [ex for part in spec["join"] for ex in read_manifest(source(part))]
            else:
                by_id = {ex.id: ex for ex in read_manifest(source(spec["from"]))}
                ids = (self.path.parent / spec["pick"]).read_text().split()
                lost = [i for i in ids if i not in by_id]
                if lost:
                    raise ReleaseError(
                        f"{target}: {len(lost)} ids of {spec['pick']} are not in {spec['from']} (e.g. {lost[0]}); "
                        "its data was not synthesised by this recipe."
                    )
                examples = [by_id[i] for i in ids]
            write_manifest(examples, target)


def _rows(rows: dict[str, list[str]] | dict[str, str]) -> str:
    """Tab-separated lines, one per entry: what the shell script reads."""
    return "".join(
        "\t".join([key, *([value] if isinstance(value, str) else value)]) + "\n"
        for key, value in rows.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aura.train.release", description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", choices=["config", "out", "synth", "imports", "manifests", "stages", "commands", "ship"]
    )
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--out", help="the output folder (default: the recipe's out)")
    parser.add_argument("--steps", nargs="*", default=[], metavar="NAME=N", help="step counts to replace")
    parser.add_argument("--only", default="", help="stages: space-separated run names to keep")
    args = parser.parse_args(argv)
    try:
        steps = {}
        for item in args.steps:
            name, sep, value = item.partition("=")
            if not sep or not value.isdigit():
                raise ReleaseError(f"--steps {item}: expected NAME=N with a whole number, e.g. more=3000.")
            steps[name] = int(value)
        release = Release.load(args.recipe, args.out, steps)
        if args.part == "manifests":
            release.write_manifests()
            return 0
        if args.part == "config":
            print(release.config_file)
            return 0
        if args.part == "out":
            print(release.out)
            return 0
        rows = getattr(release, args.part)()
        if args.part == "stages" and args.only.split():
            unknown = [name for name in args.only.split() if name not in rows]
            if unknown:
                raise ReleaseError(
                    f"ONLY: no run named '{unknown[0]}' in {release.path}; its runs are {', '.join(rows)}."
                )
            rows = {name: value for name, value in rows.items() if name in args.only.split()}
        sys.stdout.write(_rows(rows))
    except (ReleaseError, OSError) as err:
        print(f"aura.train.release: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
