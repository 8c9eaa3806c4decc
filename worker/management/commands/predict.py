"""``manage.py predict --model PATH --test-file PATH``: one RUL per engine, as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from turbofan.data.files import DataFileError, read_engine_file
from turbofan.models.artefact import ArtefactError, RulModel


class Command(BaseCommand):
    help = "Print unit,predicted_rul for every engine of a C-MAPSS test file, from its last cycle."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", type=Path, required=True, help="a .rulmodel file")
        parser.add_argument("--test-file", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = RulModel.load(options["model"])
            frame = read_engine_file(options["test_file"], "test")
        except (ArtefactError, DataFileError) as error:
            self.stderr.write(f"error: {error}")
            raise SystemExit(1) from None
        predictions = model.predict_frame(frame).round({"predicted_rul": 3})
        self.stdout.write(predictions.to_csv(index=False), ending="")
