"""The StatefulSet's pod count when operations hold it (podcount.py)."""

from omendb_operator.plans.podcount import PodCount, decide_pod_count


def decide(spec: int = 3, live: int = 3, restore: int | None = None, hibernation: int | None = None,
           switchover: int | None = None, jobs: tuple[str, ...] = ()) -> PodCount:
    return decide_pod_count(spec, live, restore_hold=restore, hibernation_hold=hibernation,
                            switchover_hold=switchover, backup_jobs=jobs)


def test_the_spec_count_when_nothing_holds_it() -> None:
    assert decide() == PodCount(None)
    assert decide(spec=5, live=3) == PodCount(None)  # scaling up never waits


def test_a_restore_wins_even_over_a_running_backup() -> None:
    assert decide(restore=0, hibernation=0, switchover=3, jobs=("db-backup-full-1",)) == PodCount(0)


def test_hibernation_and_switchover_holds() -> None:
    assert decide(hibernation=0) == PodCount(0)
    assert decide(spec=1, switchover=3) == PodCount(3)


def test_no_scale_down_while_a_backup_runs() -> None:
    waiting = decide(spec=1, live=3, jobs=("db-backup-full-1",))
    assert waiting.override == 3 and waiting.waiting is not None
    assert "from 3 to 1 pods" in waiting.waiting and "db-backup-full-1" in waiting.waiting
    assert decide(hibernation=0, live=2, jobs=("b",)).override == 2  # hibernation waits too
    assert decide(spec=1, live=1, jobs=("b",)) == PodCount(None)  # nothing to remove: no wait
