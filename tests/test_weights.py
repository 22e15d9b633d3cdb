"""The weight board without Ray: versioned, saved, watched by long polls, acknowledged."""

from __future__ import annotations

import asyncio
import json

from serve_app.shell.weights import WeightBoard


def run(coro):
    return asyncio.run(coro)


def test_watchers_wake_on_a_change_and_acknowledge_it(tmp_path):
    async def scenario():
        board = WeightBoard(str(tmp_path / "w.json"), 0.3, 0.7)
        first = await board.get()
        watchers = [asyncio.create_task(board.watch(f"r{i}", first.generation, timeout=5)) for i in range(3)]
        await asyncio.sleep(0.05)
        new = await board.set(0.6, 0.4)
        seen = await asyncio.wait_for(asyncio.gather(*watchers), 1)
        assert {s.generation for s in seen} == {new.generation} and seen[0].w1 == 0.6
        waiting = asyncio.create_task(board.wait_applied(new.generation, timeout=2))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # r0..r2 have not polled with the new generation yet
        for i in range(3):
            asyncio.create_task(board.watch(f"r{i}", new.generation, timeout=5))
        assert await waiting == {"updated": 3, "replicas": 3}
        return new

    new = run(scenario())
    assert json.loads((tmp_path / "w.json").read_text())["generation"] == new.generation


def test_a_slow_replica_is_reported_not_waited_for_forever():
    async def scenario():
        board = WeightBoard(None, 0.3, 0.7)
        asyncio.create_task(board.watch("late", 1, timeout=5))
        await asyncio.sleep(0.01)
        state = await board.set(0.5, 0.5)
        return await board.wait_applied(state.generation, timeout=0.2)

    assert run(scenario()) == {"updated": 0, "replicas": 1}


def test_saved_weights_outlive_the_board_and_config_changes_win(tmp_path):
    path = str(tmp_path / "w.json")

    async def adjust():
        board = WeightBoard(path, 0.3, 0.7)
        await board.set(0.45, 0.55)

    async def restart(w1, w2):
        board = WeightBoard(path, 0.3, 0.7)
        return await board.offer_config(w1, w2)

    run(adjust())
    kept = run(restart(0.3, 0.7))  # same deploy config: the adjusted weights stay
    assert (kept.w1, kept.w2) == (0.45, 0.55)
    changed = run(restart(0.2, 0.8))  # a deploy that changes the config's weights wins
    assert (changed.w1, changed.w2) == (0.2, 0.8) and changed.generation == kept.generation + 1
