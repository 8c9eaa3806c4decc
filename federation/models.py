"""Federations, the sites that join them, their rounds and the models they produce."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Federation(models.Model):
    """A group of sites training one RUL model together, run by its admin."""

    class Strategy(models.TextChoices):
        FEDAVG = "fedavg", "FedAvg"
        FEDPROX = "fedprox", "FedProx"
        FEDADAM = "fedadam", "FedAdam"

    class Status(models.TextChoices):
        DRAFT = "draft", "not started"
        RUNNING = "running", "running"
        FINISHED = "finished", "finished"
        FAILED = "failed", "stopped on a failure"

    name = models.CharField(max_length=100, unique=True)
    admin = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="administered"
    )
    subset = models.CharField(max_length=5, default="FD001", help_text="C-MAPSS task")
    # Network recipe and federated-training settings, as the Django-free core reads them.
    model_spec = models.JSONField(default=dict, blank=True)
    strategy = models.CharField(max_length=10, choices=Strategy.choices, default=Strategy.FEDAVG)
    strategy_settings = models.JSONField(default=dict, blank=True)
    rounds = models.PositiveIntegerField(default=10)
    local_epochs = models.PositiveIntegerField(default=2)
    # The fewest sites a round takes, and whose inputs a published sum may hold (at least
    # 3 under secure aggregation: federation.core.engine.rounds.MIN_CONTRIBUTORS).
    min_sites = models.PositiveIntegerField(default=3)
    round_deadline = models.PositiveIntegerField(default=300, help_text="seconds")
    # Training rounds sum the sites' updates under secure aggregation; False is a plain
    # mode for debugging, in which the coordinator sees every site's update.
    secure_aggregation = models.BooleanField(default=True)
    # Differential privacy of training (federation.core.privacy.PrivacySettings as a
    # dict: noise multiplier, clipping bound, target epsilon and delta, sample
    # fraction); null: no DP.
    privacy = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    reason = models.TextField(blank=True)
    # The shared feature pipeline, fitted from the sites' statistics in the setup rounds.
    pipeline = models.JSONField(null=True, blank=True)
    regimes = models.JSONField(null=True, blank=True)
    # A server optimiser's state between rounds (FedAdam's moments), as .npz arrays.
    strategy_state = models.FileField(upload_to="strategy/", blank=True)
    # Boosted trees between rounds (federation.services.versions.boosting_state): the
    # trees so far, the tree being grown and the accepted trees (.npz in base64), the best
    # validation RMSE so far, rejections in a row, and whether growing is over.
    boosting_state = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def privacy_label(self) -> str:
        """How the coordinator sees the sites' updates, in words for every page that shows it."""
        if not self.secure_aggregation:
            return "plain aggregation, for debugging: the coordinator sees every site's update"
        label = "secure aggregation (SecAgg+): the coordinator sees only the sum"
        if self.privacy:
            label += (
                f"; differential privacy: noise x{self.privacy['noise_multiplier']:g} on "
                f"updates clipped to {self.privacy['clip']:g}, budget epsilon "
                f"{self.privacy['epsilon']:g} at delta {self.privacy['delta']:g}"
            )
        return label


class Site(models.Model):
    """An equipment owner's installation: its data stays with its worker."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        PAUSED = "paused", "paused by its owner"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sites"
    )
    name = models.SlugField(max_length=50, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # SHA-256 of the credential; the credential itself is shown once and never stored.
    credential_hash = models.CharField(max_length=64, blank=True, db_index=True)
    credential_issued_at = models.DateTimeField(null=True, blank=True)
    data_summary = models.JSONField(null=True, blank=True)
    # The site's long-term Ed25519 public key (base64), registered by its worker; its
    # secure-aggregation keys of each round are signed with the private half.
    identity_key = models.CharField(max_length=64, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def may_hold_credential(self) -> bool:
        """Whether the site may be issued a credential: once a federation has approved it
        (a suspended member keeps one, to come back); before, no work would take it."""
        return self.memberships.filter(
            status__in=[Membership.Status.APPROVED, Membership.Status.SUSPENDED]
        ).exists()


class Membership(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "requested", "requested"
        APPROVED = "approved", "approved"
        SUSPENDED = "suspended", "suspended"
        LEFT = "left", "left"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="memberships")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="memberships")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    # The site's own limit on the privacy it spends in this federation (null: the
    # federation's budget only); work that would pass it leaves the site out.
    epsilon_cap = models.FloatField(null=True, blank=True)
    # What joining is worth at the site, computed there on its own engines and published
    # by its owner from the site's console (null: never published). Unchecked: only the
    # site has the engines it was computed on.
    published_worth = models.JSONField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["federation", "site"], name="one_membership_per_site")
        ]


class Round(models.Model):
    """One collection step of a federation, as an explicit state machine.

    ``points`` and ``moments`` rounds fit the shared preprocessing from the sites'
    statistics (and a ``sketch`` round the bins of boosted trees); ``train`` rounds train
    a network, ``boost`` rounds grow trees a level at a time; an ``analytics`` round
    answers one query (numbered by the query) beside them.
    """

    class Kind(models.TextChoices):
        POINTS = "points", "operating points"
        MOMENTS = "moments", "sensor moments"
        SKETCH = "sketch", "bins of the trees"
        TRAIN = "train", "training"
        BOOST = "boost", "growing trees"
        EVALUATE = "evaluate", "evaluation"
        PERSONALISE = "personalise", "personalisation"
        ANALYTICS = "analytics", "analytics query"

    class Status(models.TextChoices):
        OPEN = "open", "open"
        COLLECTING = "collecting", "collecting"
        AGGREGATING = "aggregating", "aggregating"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="round_set")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.TRAIN)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    reason = models.TextField(blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    deadline = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    # Set by the one task that aggregates the round (a guarded UPDATE from NULL).
    aggregation_claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    # The protocol stage being collected (federation.core.engine.rounds: four stages
    # under secure aggregation, one in plain mode) and the round's public parameters
    # (RoundParameters.to_json), which every site of the round is told.
    stage = models.CharField(max_length=20, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    # What the sum decoded into, where no other record holds it: a personalisation
    # round's count of the sites that chose each model.
    outcome = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["federation", "id"]
        constraints = [
            # A failed round may be run again (after a restart); any other twice, never.
            models.UniqueConstraint(
                fields=["federation", "kind", "number"],
                condition=~models.Q(status="failed"),
                name="one_live_round_per_kind_and_number",
            )
        ]

    def __str__(self) -> str:
        return f"{self.federation} {self.kind} round {self.number}"


class Contribution(models.Model):
    """A site's part in a round; what it sent in each stage is a :class:`StageMessage`."""

    class Status(models.TextChoices):
        ASSIGNED = "assigned", "assigned"
        RECEIVED = "received", "received"
        DROPPED = "dropped", "dropped (no answer by the deadline)"
        EXCLUDED = "excluded", "excluded (proved to have broken the protocol)"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="contributions")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="contributions")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ASSIGNED)
    # What the site said beside its input: its examples and how long it trained.
    examples = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    # The last protocol stage this site answered.
    stage = models.CharField(max_length=20, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["round", "site"], name="one_contribution_per_site")
        ]


class ModelVersion(models.Model):
    """The global model after a round (version 0: the initial weights).

    A new version is a candidate until the next round's sites have scored it against the
    last accepted version on their validation engines: accepted, or rejected with the
    reason (the federation then goes on from the last accepted version).
    """

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "candidate"
        ACCEPTED = "accepted", "accepted"
        REJECTED = "rejected", "rejected"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="versions")
    round = models.OneToOneField(Round, null=True, blank=True, on_delete=models.SET_NULL)
    version = models.PositiveIntegerField()
    file = models.FileField(upload_to="models/")
    sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    verdict = models.TextField(blank=True)  # why it was accepted or rejected
    # When rejected: the sites whose inputs made it and that did not find it worse when it
    # was scored (a site in several such lists is flagged to the admin).
    suspects = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["federation", "version"]
        constraints = [
            models.UniqueConstraint(fields=["federation", "version"], name="one_model_per_version")
        ]


class StageMessage(models.Model):
    """What one site sent in one stage of a round, as the coordinator keeps it.

    Under secure aggregation: public keys and signatures, shares encrypted to another
    site, a masked vector (a file), or the shares revealed for unmasking, never a site's
    update in the clear. In plain mode (for debugging): the site's input, in the clear.
    """

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="stage_messages")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="stage_messages")
    stage = models.CharField(max_length=20)
    body = models.JSONField(default=dict, blank=True)
    vector = models.FileField(upload_to="vectors/", blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["round", "site", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "site", "stage"], name="one_message_per_site_and_stage"
            )
        ]


class Fault(models.Model):
    """A member proved to have broken the protocol in a round, and how: a share that did
    not open or match its commitment, a false complaint, a revealed share that was not the
    one committed to, shares that rebuild no committed secret. The coordinator shows it
    from what it holds, never on anyone's word; repeated faults suspend the member."""

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="faults")
    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="faults")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="faults")
    stage = models.CharField(max_length=20)
    detail = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["federation", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["round", "site", "stage"], name="one_fault_per_site_and_stage"
            )
        ]

    def __str__(self) -> str:
        return f"{self.site} in {self.round}: {self.detail}"


class PrivacySpend(models.Model):
    """One line of the privacy ledger: a mechanism run on the sites' data.

    The federation's line (``site`` null) and one line per site whose data was in the
    running, each with the epsilon spent so far after it.
    """

    class Kind(models.TextChoices):
        TRAINING = "training", "training round"
        ANALYTICS = "analytics", "analytics query"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="spends")
    site = models.ForeignKey(
        Site, null=True, blank=True, on_delete=models.CASCADE, related_name="spends"
    )
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="spends"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.CharField(max_length=200, blank=True)
    noise_multiplier = models.FloatField()
    sample_fraction = models.FloatField(default=1.0)
    epsilon = models.FloatField(help_text="epsilon spent so far, after this line")
    delta = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["federation", "id"]


class AnalyticsQuery(models.Model):
    """Statistics across the sites, computed from the secure sum of their encodings.

    ``query`` is a :class:`federation.core.analytics.Query` as a dict; ``result`` holds
    only what the sum gives (counts, means, variances, histograms, quantiles), never a
    site's own numbers. With ``noise_multiplier`` set, each site adds its share of
    Gaussian noise and the query spends privacy budget.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="queries")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    query = models.JSONField()
    noise_multiplier = models.FloatField(null=True, blank=True)
    round = models.OneToOneField(
        Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="query"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    reason = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["federation", "-id"]
