//! Declaring a NIF together with its dirty-scheduler twin.
//!
//! Operations whose cost depends on their input come in pairs: a normal-scheduler NIF
//! that gives up past a small budget (returning `guild_kit_dirty`), and a `_dirty` twin
//! on a dirty CPU scheduler that the Elixir wrapper then calls. Both forward to one
//! implementation that takes `dirty: bool` last.

/// `twin_nifs! { name / name_dirty => implementation(arg: [Type], ...); }` declares
/// `name` and `name_dirty`, each calling `implementation(env, args..., dirty)`.
/// Argument types may use the lifetime `'a` of the call's environment. They are written
/// in brackets and passed on as raw tokens: `#[rustler::nif]` does not accept the
/// grouped type a `$ty:ty` fragment would give it.
macro_rules! twin_nifs {
    ($($name:ident / $dirty:ident => $implementation:ident($($arg:ident : [$($ty:tt)+]),* $(,)?);)+) => {
        $(
            #[rustler::nif]
            fn $name<'a>(
                env: rustler::Env<'a>,
                $($arg: $($ty)+),*
            ) -> rustler::NifResult<rustler::Term<'a>> {
                $implementation(env, $($arg,)* false)
            }

            #[rustler::nif(schedule = "DirtyCpu")]
            fn $dirty<'a>(
                env: rustler::Env<'a>,
                $($arg: $($ty)+),*
            ) -> rustler::NifResult<rustler::Term<'a>> {
                $implementation(env, $($arg,)* true)
            }
        )+
    };
}

pub(crate) use twin_nifs;
