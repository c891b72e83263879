from pathlib import Path

from selfdev.engine.events import EVENT_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_event_type_is_documented():
    text = (DOCS / "events.md").read_text()
    missing = [t for t in EVENT_TYPES if f"`{t}`" not in text]
    assert not missing, missing
