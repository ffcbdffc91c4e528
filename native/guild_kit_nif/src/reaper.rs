//! Frees big native structures off the schedulers.
//!
//! A resource's destructor runs on whichever scheduler garbage-collects its last
//! reference. Freeing a million-element tree takes milliseconds, so large values are
//! sent to one background thread and freed there instead.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

type Garbage = Box<dyn Send>;

static REAPER: OnceLock<Option<Mutex<Sender<Garbage>>>> = OnceLock::new();

/// Drops `value` on the reaper thread, or right here if that thread cannot be started.
pub fn drop_later<T: Send + 'static>(value: T) {
    let reaper = REAPER.get_or_init(|| {
        let (sender, receiver) = channel::<Garbage>();
        std::thread::Builder::new()
            .name("guild_kit_reaper".into())
            .spawn(move || receiver.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(sender))
    });
    let garbage: Garbage = Box::new(value);
    if let Some(sender) = reaper {
        let sender = sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // If the thread is gone the value comes back in the error and drops here.
        let _ = sender.send(garbage);
    }
}
