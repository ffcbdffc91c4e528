//! Atoms shared by the adapters.

rustler::atoms! {
    nil,
}
