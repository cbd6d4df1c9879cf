import subprocess
import sys

import aura


def test_public_api_is_reachable_from_the_package_root() -> None:
    from aura.audio.features import load_audio
    from aura.infer.aura_model import AuraModel
    from aura.teacher.whisper import load_teacher

    assert aura.load_audio is load_audio
    assert aura.load_teacher is load_teacher
    assert aura.AuraModel is AuraModel
    assert callable(aura.load_llm)
    assert set(aura.__all__) == {"__version__", *aura._EXPORTS}


def test_import_aura_stays_light() -> None:
    code = "import sys, aura; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )
