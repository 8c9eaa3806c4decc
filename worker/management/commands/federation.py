"""Run a federation from the command line: ``python manage.py federation <action> ...``.

The same services as the pages: create a federation (with differential privacy if
asked), add a site and ask to join, approve, issue the site's credential to its
owner (shown once, with the command that starts its worker), set a site's own
privacy cap, start, and show progress.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from federation import budget
from federation.core.privacy import PrivacyError, PrivacySettings, budget_preview
from federation.core.recipes import default_boosting
from federation.errors import FederationError
from federation.models import AnalyticsQuery, Federation, Membership, Round, Site
from federation.selectors.federations import federation_progress
from federation.selectors.sites import worker_command
from federation.services import federations, rounds, sites
from turbofan.models.trees import BoostingSettings

MODEL_FAMILIES = ("network", "trees", "hybrid")


class Command(BaseCommand):
    help = "Create and run federations and let sites join them, from the command line."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a federation")
        create.add_argument("name")
        create.add_argument("--admin", required=True, help="user name of its admin")
        create.add_argument("--subset", default="FD001")
        create.add_argument(
            "--rounds",
            type=int,
            help="the network's training rounds (default 10; none for --model trees)",
        )
        create.add_argument(
            "--model",
            choices=MODEL_FAMILIES,
            default="network",
            help="what the federation trains: a network (FedAvg over the secure sum of the "
            "sites' weights), boosted trees (grown a level a round from the secure sum of "
            "the sites' gradient histograms: the trees a model of all the rows in one place "
            "would grow), or a hybrid: the network, then the trees, blended at the share the "
            "sites' validation prefers",
        )
        trees = create.add_argument_group("boosted trees (with --model trees or hybrid)")
        defaults = default_boosting()
        trees.add_argument(
            "--trees",
            type=int,
            default=defaults.trees,
            help=f"the most trees (default {defaults.trees}; growing stops earlier once "
            "the sites' validation stops improving)",
        )
        trees.add_argument("--depth", type=int, default=defaults.depth, help="levels a tree")
        trees.add_argument(
            "--learning-rate", type=float, default=defaults.learning_rate, help="per tree"
        )
        create.add_argument(
            "--min-sites",
            type=int,
            default=3,
            help="the fewest sites a round takes and a published sum holds (at least 3 unless "
            "--plain)",
        )
        create.add_argument("--deadline", type=int, default=300, help="seconds per round")
        create.add_argument(
            "--personal-epochs",
            type=int,
            default=0,
            help="after the last round each site fine-tunes the federation's model for up to "
            "this many epochs and keeps the best of it, the federation's model and a model "
            "trained alone, on its own validation engines (default 0: none)",
        )
        create.add_argument(
            "--private-head",
            action="store_true",
            help="FedPer: each site keeps the network's output layer to itself and only the "
            "body is summed (needs --personal-epochs)",
        )
        create.add_argument(
            "--ditto",
            type=float,
            default=0.0,
            metavar="MU",
            help="Ditto: each site trains a personal model alongside the federation's, pulled "
            "toward it with this proximal weight, a candidate of its choice (needs "
            "--personal-epochs; default 0: none)",
        )
        create.add_argument(
            "--fresh-optimisers",
            action="store_true",
            help="each site's optimiser starts afresh every round, as in plain FedAvg "
            "(default: it goes on from the site's last round, its moments kept at the site)",
        )
        create.add_argument(
            "--plain",
            action="store_true",
            help="plain aggregation, for debugging only: the coordinator sees every "
            "site's update (the default is secure aggregation)",
        )
        dp = create.add_argument_group(
            "differential privacy (site-level, noise added in shares inside the secure sum)"
        )
        dp.add_argument(
            "--dp-noise",
            type=float,
            help="noise multiplier: noise std in units of the clipping bound (turns DP on)",
        )
        dp.add_argument("--dp-clip", type=float, default=1.0, help="L2 bound of a site's update")
        dp.add_argument("--dp-epsilon", type=float, default=8.0, help="the budget: target epsilon")
        dp.add_argument("--dp-delta", type=float, default=1e-5)
        dp.add_argument(
            "--sample-fraction", type=float, default=1.0, help="fraction of sites per round"
        )
        cap = actions.add_parser(
            "cap", help="set (or with no --epsilon, clear) a site's own privacy cap"
        )
        cap.add_argument("federation")
        cap.add_argument("site")
        cap.add_argument("--owner", required=True, help="user name of the site's owner")
        cap.add_argument("--epsilon", type=float, help="the most epsilon the site will spend")
        query = actions.add_parser(
            "query", help="ask the sites for statistics over the secure sum (the admin)"
        )
        query.add_argument("federation")
        query.add_argument("--sensors", nargs="+", required=True, help="e.g. s_2 s_11")
        query.add_argument("--per-regime", action="store_true", help="also per operating regime")
        query.add_argument(
            "--bins",
            nargs="+",
            default=[],
            metavar="SENSOR:LOW:HIGH:COUNT",
            help="histograms, e.g. s_2:535:650:23 (quantiles come from them)",
        )
        query.add_argument("--noise", type=float, help="DP noise multiplier (spends budget)")
        answer = actions.add_parser("answer", help="print a query's status and answer (JSON)")
        answer.add_argument("query", type=int, help="the query's id")
        join = actions.add_parser("join", help="create a site (if new) and ask to join")
        join.add_argument("federation")
        join.add_argument("site")
        join.add_argument("--owner", required=True, help="user name of the site's owner")
        approve = actions.add_parser("approve", help="approve a site's request (the admin)")
        approve.add_argument("federation")
        approve.add_argument("site")
        credential = actions.add_parser(
            "credential", help="issue a site's credential, shown once (the site's owner)"
        )
        credential.add_argument("site")
        credential.add_argument("--owner", required=True, help="user name of the site's owner")
        credential.add_argument(
            "--coordinator",
            default="http://127.0.0.1:8000/",
            help="the URL sites reach the coordinator at",
        )

        for name in ("start", "status"):
            action = actions.add_parser(name, help=f"{name} a federation")
            action.add_argument("federation")
        extend = actions.add_parser(
            "extend", help="run more training rounds of a finished federation, from its model"
        )
        extend.add_argument("federation")
        extend.add_argument("--rounds", type=int, required=True, help="how many more rounds")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"_{options['action']}")(options)
        except FederationError as error:
            raise CommandError(str(error)) from None

    def _federation(self, name: str) -> Federation:
        federation = Federation.objects.filter(name=name).first()
        if federation is None:
            raise CommandError(f"no federation named {name!r}")
        return federation

    def _user(self, username: str) -> Any:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}: create it with createsuperuser or sign up")
        return user

    def _create(self, options: dict[str, Any]) -> None:
        boosting = self._boosting(options)
        rounds = options["rounds"]
        if rounds is None:
            rounds = 0 if options["model"] == "trees" else 10
        elif options["model"] == "trees" and rounds:
            raise CommandError(
                "--model trees trains no network: drop --rounds (or use --model hybrid)"
            )
        federation = federations.federation_create(
            name=options["name"],
            admin=self._user(options["admin"]),
            subset=options["subset"],
            rounds=rounds,
            boosting=boosting,
            min_sites=options["min_sites"],
            deadline=options["deadline"],
            secure=not options["plain"],
            privacy=self._privacy(options),
            personal_epochs=options["personal_epochs"],
            private_head=options["private_head"],
            ditto_mu=options["ditto"],
            site_optimiser=not options["fresh_optimisers"],
        )
        self.stdout.write(
            f"created federation {federation.name!r} (id {federation.id}): "
            f"{federation.privacy_label}"
        )
        if federation.privacy:
            preview = budget_preview(
                PrivacySettings.from_dict(federation.privacy), federation.rounds
            )
            self.stdout.write(("WARNING: " if "only" in preview else "") + preview)

    def _boosting(self, options: dict[str, Any]) -> BoostingSettings | None:
        if options["model"] == "network":
            return None
        try:
            return dataclasses.replace(
                default_boosting(),
                trees=options["trees"],
                depth=options["depth"],
                learning_rate=options["learning_rate"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from None

    def _privacy(self, options: dict[str, Any]) -> PrivacySettings | None:
        if options["dp_noise"] is None:
            return None
        if options["plain"]:
            raise CommandError("differential privacy needs secure aggregation: drop --plain")
        try:
            settings = PrivacySettings(
                noise_multiplier=options["dp_noise"],
                clip=options["dp_clip"],
                epsilon=options["dp_epsilon"],
                delta=options["dp_delta"],
                sample_fraction=options["sample_fraction"],
            )
        except PrivacyError as error:
            raise CommandError(str(error)) from None
        return settings

    def _cap(self, options: dict[str, Any]) -> None:
        membership = Membership.objects.filter(
            federation=self._federation(options["federation"]),
            site__name=options["site"],
            site__owner=self._user(options["owner"]),
        ).first()
        if membership is None:
            raise CommandError(
                f"{options['owner']!r} owns no site {options['site']!r} in that federation"
            )
        budget.membership_set_cap(membership=membership, epsilon_cap=options["epsilon"])
        cap = options["epsilon"]
        self.stdout.write(
            f"{options['site']!r} will spend at most epsilon {cap:g} there"
            if cap is not None
            else f"{options['site']!r} has no cap of its own there"
        )

    def _query(self, options: dict[str, Any]) -> None:
        bins = []
        for spec in options["bins"]:
            try:
                sensor, low, high, count = spec.split(":")
                bins.append(
                    {"sensor": sensor, "low": float(low), "high": float(high), "count": int(count)}
                )
            except ValueError:
                raise CommandError(f"--bins {spec!r}: write SENSOR:LOW:HIGH:COUNT") from None
        record = rounds.analytics_request(
            federation=self._federation(options["federation"]),
            query={
                "sensors": options["sensors"],
                "per_regime": options["per_regime"],
                "bins": bins,
            },
            noise_multiplier=options["noise"],
        )
        if record.status == record.Status.FAILED:
            raise CommandError(f"query {record.id} refused: {record.reason}")
        self.stdout.write(
            f"query {record.id} is running; its answer: manage.py federation answer {record.id}"
        )

    def _answer(self, options: dict[str, Any]) -> None:
        record = AnalyticsQuery.objects.filter(id=options["query"]).first()
        if record is None:
            raise CommandError(f"no query {options['query']}")
        report = {
            "query": record.query,
            "noise_multiplier": record.noise_multiplier,
            "status": record.status,
            "reason": record.reason,
            "result": record.result,
        }
        self.stdout.write(json.dumps(report, indent=2))

    def _join(self, options: dict[str, Any]) -> None:
        federation = self._federation(options["federation"])
        owner = self._user(options["owner"])
        site = Site.objects.filter(name=options["site"]).first()
        if site is None:
            site = sites.site_create(owner=owner, name=options["site"])
        elif site.owner_id != owner.pk:
            raise CommandError(f"site {site.name!r} belongs to another owner")
        membership = sites.membership_request(federation=federation, site=site)
        self.stdout.write(f"site {site.name!r}: membership {membership.status}")

    def _approve(self, options: dict[str, Any]) -> None:
        federation = self._federation(options["federation"])
        membership = Membership.objects.filter(
            federation=federation, site__name=options["site"]
        ).first()
        if membership is None:
            raise CommandError(f"site {options['site']!r} has not asked to join")
        sites.membership_approve(membership=membership)
        self.stdout.write(
            f"approved {options['site']!r} in {federation.name!r}; its owner gets the "
            f"credential with: manage.py federation credential {options['site']} --owner USER"
        )

    def _credential(self, options: dict[str, Any]) -> None:
        site = Site.objects.filter(name=options["site"], owner=self._user(options["owner"])).first()
        if site is None:
            raise CommandError(f"{options['owner']!r} owns no site named {options['site']!r}")
        replaced = bool(site.credential_hash)
        credential = sites.site_issue_credential(site=site)
        self.stdout.write(
            ("The old credential has stopped working. " if replaced else "")
            + "The site's credential (shown once; keep it where the worker runs):\n"
            f"  {credential}\nStart the site's worker, in the project's folder, with:\n"
            f"  {worker_command(credential=credential, coordinator=options['coordinator'])}"
        )

    def _start(self, options: dict[str, Any]) -> None:
        round_ = federations.federation_start(federation=self._federation(options["federation"]))
        self.stdout.write(f"started: {round_.kind} round {round_.number} is {round_.status}")

    def _extend(self, options: dict[str, Any]) -> None:
        federation = self._federation(options["federation"])
        round_ = federations.federation_extend(federation=federation, rounds=options["rounds"])
        if round_.status == Round.Status.FAILED:
            raise CommandError(f"training round {round_.number} could not run: {round_.reason}")
        self.stdout.write(
            f"{options['rounds']} more rounds: training round {round_.number} is open "
            f"(the federation now trains {round_.number + options['rounds'] - 1} rounds)"
        )

    def _status(self, options: dict[str, Any]) -> None:
        federation = self._federation(options["federation"])
        progress = federation_progress(federation=federation)
        report = {
            "privacy": federation.privacy_label,
            "epsilon_spent": budget.spent(federation=federation) if federation.privacy else None,
            **progress,
        }
        self.stdout.write(json.dumps(report, indent=2, default=str))
