"""tools/probe_long_run.py: bad CHANGES end in one clear error before anything loads or trains."""
from __future__ import annotations

import pytest

from tools.probe_long_run import main


@pytest.mark.parametrize("changes, message", [("x", "must be a JSON object"), ("[1]", "must be a JSON object"),
                                              ('{"embedsize": 1}', "not TrainConfig fields: embedsize"),
                                              ('{"embed_size": -1}', "embed_size must be an integer >= 1")])
def test_bad_changes_name_the_fix(changes, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([changes, "--runs", str(tmp_path)])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or written
