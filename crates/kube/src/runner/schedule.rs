//! When a run's ticks are due: on a grid, each one interval (or one readiness poll) after the
//! slot of the tick before, whatever the ticks themselves took.

use std::time::Duration;

use tokio::time::Instant;

/// The slots of a run's ticks. A tick's slot is when it was due; one that starts late (its
/// runner was busy getting ready, or waited for the API server) keeps its slot, so lateness
/// does not add up over a release: a release of many canaries ends on its plan.
#[derive(Debug)]
pub(crate) struct Ticks {
    /// The slot of the coming tick, when it is known (the first tick of a release member,
    /// or a tick whose wait ran out).
    coming: Option<Instant>,
    /// The slot of the tick under way (when the run began, before its first tick).
    current: Instant,
}

impl Ticks {
    /// A run whose first tick is due at `first` (a release member's staggered start), or at
    /// once.
    pub(crate) fn new(first: Option<Instant>) -> Ticks {
        Ticks {
            coming: first,
            current: Instant::now(),
        }
    }

    /// A tick begins at `now`: its slot (when it was due, never later than now).
    pub(crate) fn begin(&mut self, now: Instant) -> Instant {
        let slot = self.coming.take().map_or(now, |due| due.min(now));
        self.current = slot;
        slot
    }

    /// When the tick after the one under way is due, `wait` after its slot.
    pub(crate) fn next(&self, wait: Duration) -> Instant {
        self.current + wait
    }

    /// The wait for `due` ran out: the coming tick has that slot.
    pub(crate) fn waited_for(&mut self, due: Instant) {
        self.coming = Some(due);
    }

    /// The coming tick takes the place of the one under way, before its wait ran out (a
    /// release's gate opened while the canary waited at it: the promotion is what that tick
    /// would have done, had the gate been open): it has the same slot, and the ticks after it
    /// keep to the grid.
    pub(crate) fn in_place(&mut self) {
        self.coming = Some(self.current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn late_ticks_keep_their_slots_and_a_promotion_takes_the_held_ticks_place() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let interval = 2 * SECOND;
        let mut ticks = Ticks::new(Some(at(40)));
        // The first tick comes late (the runner was getting ready): it keeps its slot.
        assert_eq!(ticks.begin(at(150)), at(40));
        let due = ticks.next(interval);
        assert_eq!(due, at(2040));
        // Its wait ran out, and the runner woke 30 ms after the slot.
        ticks.waited_for(due);
        assert_eq!(ticks.begin(at(2070)), at(2040));
        assert_eq!(ticks.next(interval), at(4040));
        // The canary is held at the release's gate; the gate opens 190 ms into its wait:
        // the promotion tick runs now, and the tick after it is due on the grid, not an
        // interval after the promotion.
        ticks.in_place();
        assert_eq!(ticks.begin(at(2230)), at(2040));
        assert_eq!(ticks.next(interval), at(4040));
        // A tick that only waited for readiness comes back after the poll, from its slot.
        ticks.waited_for(at(4040));
        ticks.begin(at(4041));
        assert_eq!(ticks.next(SECOND / 4), at(4290));
    }

    #[test]
    fn without_a_given_first_slot_ticks_start_when_they_begin() {
        let t0 = Instant::now();
        let mut ticks = Ticks::new(None);
        assert_eq!(ticks.begin(t0), t0);
        assert_eq!(ticks.next(SECOND), t0 + SECOND);
        // A slot is never in the future: a wait cut short starts its tick then.
        ticks.waited_for(t0 + 3 * SECOND);
        assert_eq!(ticks.begin(t0 + SECOND), t0 + SECOND);
    }
}
