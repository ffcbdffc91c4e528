//! Telling the scheduler what a NIF call cost.
//!
//! The VM counts a NIF call as one reduction whatever it costs, so a process calling
//! cheap NIFs in a tight loop would keep its scheduler far past its time slice.
//! `enif_consume_timeslice` takes whole percents of a slice (about 10 µs each), too
//! coarse for calls of a microsecond: charging 1% per call would make a process yield
//! ten times too often. So small costs accumulate per scheduler thread and are charged
//! one percent per 10 µs owed.

use std::cell::Cell;
use std::time::Instant;

use rustler::Env;

const MICROS_PER_PERCENT: u32 = 10;

/// Charges about `micros` microseconds of work to the calling process.
pub fn charge(env: Env, micros: u32) {
    thread_local! {
        static OWED: Cell<u32> = const { Cell::new(0) };
    }
    let percent = OWED.with(|owed| {
        let total = owed.get().saturating_add(micros);
        owed.set(total % MICROS_PER_PERCENT);
        total / MICROS_PER_PERCENT
    });
    if percent > 0 {
        rustler::schedule::consume_timeslice(env, percent.min(100) as i32);
    }
}

/// Charges the time since `started`, rounded up to a whole microsecond.
pub fn charge_since(env: Env, started: Instant) {
    let micros = started.elapsed().as_nanos().div_ceil(1000);
    charge(env, micros.min(u128::from(u32::MAX)) as u32);
}
