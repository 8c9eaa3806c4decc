"""Split C-MAPSS training engines into site folders: ``manage.py partition_data``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from turbofan.data.files import DataFileError, read_engine_file
from turbofan.data.partition import SCHEMES, plan_by_subset, plan_iid, write_partition
from turbofan.data.source import DataSourceError, find_data_dir

SUBSETS = ("FD001", "FD002", "FD003", "FD004")


class Command(BaseCommand):
    help = (
        "Write a seeded partition of C-MAPSS training engines: one folder of ordinary "
        "C-MAPSS files per site, a 'holdout' folder no site gets, and partition.json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True, help="folder to create")
        parser.add_argument("--scheme", choices=SCHEMES, default="iid")
        parser.add_argument(
            "--subset",
            action="append",
            choices=SUBSETS,
            help="subset to split (iid: exactly one, default FD001; by-subset: one site "
            "each, default all four)",
        )
        parser.add_argument("--sites", type=int, default=4, help="number of sites (iid)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--holdout", type=float, default=0.1, help="fraction held out")
        parser.add_argument("--force", action="store_true", help="replace an existing --out")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            source = find_data_dir()
            plan = self._plan(source, options)
            out = write_partition(plan, source, options["out"], overwrite=options["force"])
        except (DataSourceError, DataFileError, FileExistsError, ValueError) as error:
            raise CommandError(str(error)) from None
        shares = {share.name: share.n_engines for share in [*plan.sites, plan.holdout]}
        self.stdout.write(json.dumps({"out": str(out), "engines": shares}, indent=2))

    def _plan(self, source: Path, options: dict[str, Any]):
        if options["scheme"] == "iid":
            subsets = options["subset"] or ["FD001"]
            if len(subsets) != 1:
                raise ValueError("the iid scheme splits one subset: give --subset once")
            units = read_engine_file(source / f"train_{subsets[0]}.txt")["unit"].to_numpy()
            return plan_iid(
                subsets[0],
                units,
                options["sites"],
                seed=options["seed"],
                holdout=options["holdout"],
            )
        units_by_subset = {
            s: read_engine_file(source / f"train_{s}.txt")["unit"].to_numpy()
            for s in options["subset"] or SUBSETS
        }
        return plan_by_subset(units_by_subset, seed=options["seed"], holdout=options["holdout"])
