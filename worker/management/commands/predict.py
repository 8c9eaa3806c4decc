"""``manage.py predict --model PATH --test-file PATH``: one RUL per engine, as CSV.

``--site-state DIR`` instead of ``--model``: the model a site chose after its
federation's personalisation round (``DIR/chosen.rulmodel``, see the site worker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from turbofan.data.files import DataFileError, read_engine_file
from turbofan.models.artefact import ArtefactError, RulModel
from worker.site_runtime import CHOSEN_MODEL


class Command(BaseCommand):
    help = "Print unit,predicted_rul for every engine of a C-MAPSS test file, from its last cycle."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--model", type=Path, help="a .rulmodel file")
        which.add_argument(
            "--site-state",
            type=Path,
            help="a site worker's --state-dir: the model the site chose after personalisation",
        )
        parser.add_argument("--test-file", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["model"]
        if path is None:
            path = options["site_state"] / CHOSEN_MODEL
            if not path.is_file():
                self.stderr.write(
                    f"error: {options['site_state']} holds no chosen model: the site chooses "
                    "one in its federation's personalisation round (federation create "
                    "--personal-epochs N)"
                )
                raise SystemExit(1)
        try:
            model = RulModel.load(path)
            frame = read_engine_file(options["test_file"], "test")
        except (ArtefactError, DataFileError) as error:
            self.stderr.write(f"error: {error}")
            raise SystemExit(1) from None
        predictions = model.predict_frame(frame).round({"predicted_rul": 3})
        self.stdout.write(predictions.to_csv(index=False), ending="")
