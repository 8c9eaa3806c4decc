"""``manage.py rul_report --subsets FD001 [FD002 ...] --sites N --out DIR [--dp-epsilon 8 4 1]``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation.core.engine.training import MAX_DITTO_MU
from federation.core.recipes import (
    DP_CLIP,
    QUICK,
    QUICK_BOOSTING,
    default_boosting,
    default_recipe,
    default_training,
)
from federation.core.report import SCHEMES, PrivacyPlan, Report, ReportConfig, markdown_table
from turbofan.data.files import DataFileError
from turbofan.data.source import DataSourceError, find_data_dir

SUBSETS = ("FD001", "FD002", "FD003", "FD004")


class Command(BaseCommand):
    help = (
        "Train and score, per subset, the four setups: centralised, each site alone, "
        "federated across the sites, and a gradient-boosting baseline. Writes "
        "DIR/report.json, DIR/report.md, DIR/predictions/<setup>_<subset>.csv and the "
        "trained models in DIR/models/."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--subsets", nargs="+", choices=SUBSETS, default=["FD001"])
        parser.add_argument("--sites", type=int, default=4, help="sites of the iid split")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--seeds", type=int, nargs="+", default=[0])
        parser.add_argument(
            "--scheme",
            choices=SCHEMES,
            default="iid",
            help="iid: split each subset's engines; by-subset: one site per subset",
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="a few epochs and rounds only: checks the pipeline, not accuracy",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.add_argument(
            "--model",
            choices=("network", "trees", "hybrid"),
            default="network",
            help="the family every setup trains: networks, boosted trees (the federation "
            "grows them from the secure sum of the sites' gradient histograms), or a hybrid "
            "of both, blended at the share validation prefers",
        )
        parser.add_argument(
            "--personal-epochs",
            type=int,
            default=0,
            help="personalisation: after the federation, each site fine-tunes its model for "
            "up to this many epochs, trains one alone, and chooses on its validation engines; "
            "adds a per-site table (default 0: none)",
        )
        parser.add_argument(
            "--private-head",
            action="store_true",
            help="FedPer: each site keeps the network's output layer to itself and only the "
            "body is summed; needs --personal-epochs (each site's model is scored in the "
            "per-site table)",
        )
        parser.add_argument(
            "--ditto",
            type=float,
            default=0.0,
            metavar="MU",
            help="Ditto: each site trains a personal model alongside the federation's, pulled "
            "toward it with this proximal weight (needs --personal-epochs)",
        )
        parser.add_argument(
            "--fresh-optimisers",
            action="store_true",
            help="each site's optimiser starts afresh every round, as in plain FedAvg "
            "(default: it goes on from the site's last round)",
        )
        dp = parser.add_argument_group(
            "differential privacy",
            "with --dp-epsilon, one more federated setup per target epsilon, under "
            "site-level DP: the noise multiplier is the smallest that stays within the "
            "target over all rounds (of all ensemble members) at --dp-delta",
        )
        dp.add_argument("--dp-epsilon", type=float, nargs="+", default=[], metavar="EPSILON")
        dp.add_argument("--dp-delta", type=float, default=1e-5)
        dp.add_argument(
            "--dp-clip",
            type=float,
            default=DP_CLIP,
            help=f"L2 bound of a site's update (default {DP_CLIP}: the median update norm "
            "of the default federated run on FD001)",
        )
        dp.add_argument(
            "--dp-sample-fraction",
            type=float,
            default=1.0,
            help="fraction of sites Poisson-sampled into each round (default 1: all)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["personal_epochs"] <= 50:
            raise CommandError("--personal-epochs must be from 0 (none) to 50")
        if options["personal_epochs"] and options["dp_epsilon"]:
            raise CommandError(
                "--personal-epochs scores on the sites' validation engines, which stay out "
                "of every DP round: use one or the other"
            )
        if options["private_head"] and not options["personal_epochs"]:
            raise CommandError(
                "--private-head needs --personal-epochs: with private heads each site's "
                "model is its own, scored in the per-site table"
            )
        if options["ditto"] and not options["personal_epochs"]:
            raise CommandError("--ditto needs --personal-epochs: its model is a candidate there")
        if options["ditto"] and options["private_head"]:
            raise CommandError("use --ditto or --private-head, not both")
        if not 0 <= options["ditto"] <= MAX_DITTO_MU:
            raise CommandError(f"--ditto must be from 0 (none) to {MAX_DITTO_MU:g}")
        if options["scheme"] == "by-subset" and len(options["subsets"]) < 2:
            raise CommandError("--scheme by-subset needs at least two --subsets (one site each)")
        trees = options["model"] != "network"
        if trees and (options["private_head"] or options["ditto"]):
            raise CommandError("--private-head and --ditto personalise a network: drop them")
        if trees and options["dp_epsilon"]:
            raise CommandError("boosted trees do not run with differential privacy: drop one")
        training = QUICK.training if options["quick"] else default_training()
        if trees:
            boosting = QUICK_BOOSTING if options["quick"] else default_boosting()
            training = dataclasses.replace(training, boosting=boosting.to_dict())
        if options["model"] == "trees":  # no network rounds: the trees grow on their own
            training = dataclasses.replace(training, rounds=0)
        config = ReportConfig(
            subsets=options["subsets"],
            sites=options["sites"] if options["scheme"] == "iid" else len(options["subsets"]),
            seeds=options["seeds"],
            scheme=options["scheme"],
            recipe=QUICK.recipe if options["quick"] else default_recipe(),
            training=dataclasses.replace(
                training,
                personal_epochs=options["personal_epochs"],
                private_head=options["private_head"],
                ditto_mu=options["ditto"],
                site_optimiser=not options["fresh_optimisers"],
            ),
            privacy=PrivacyPlan(
                epsilons=options["dp_epsilon"],
                delta=options["dp_delta"],
                clip=options["dp_clip"],
                sample_fraction=options["dp_sample_fraction"],
            )
            if options["dp_epsilon"]
            else None,
        )
        try:
            report = Report(
                config,
                find_data_dir(),
                options["out"],
                progress=not options["no_progress"],
                say=self.stdout.write,
            ).run()
        except (DataSourceError, DataFileError, ValueError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(markdown_table(report))
        self.stdout.write(f"Written to {options['out']}")
