//! What the topic, service and queue builders share: the options every builder has
//! ([`Common`]), the payload size rule, and the macro that declares a builder's options once
//! (field, default and setter).

use std::time::Duration;

use crate::error::OpenError;
use crate::shm::{Backing, OpenMode};
use crate::topic::Payload;

/// The options every builder has: where the segment lives, its name, how long a waiting handle
/// spins, and whether opening may create the segment.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) backing: Backing,
    pub(crate) name: String,
    pub(crate) spin: Duration,
    pub(crate) mode: OpenMode,
    /// A shape given by `Node::topic_shaped` / `service_shaped`: it fixes the layout and the
    /// payload type, in place of the builder's.
    pub(crate) shape: Option<std::sync::Arc<crate::shape::Shape>>,
}

impl Common {
    /// The defaults: spin 20 µs before sleeping, open or create.
    pub(crate) fn new(backing: Backing, name: &str) -> Common {
        Common {
            backing,
            name: name.to_string(),
            spin: Duration::from_micros(20),
            mode: OpenMode::OpenOrCreate,
            shape: None,
        }
    }
}

/// The bytes a message of payload type `P` takes: its fixed size (at least 1), or `explicit`
/// (default 4096) for byte and rkyv payloads; an alignment above `max_align` is an
/// [`OpenError::InvalidConfig`].
pub(crate) fn payload_size<P: Payload + ?Sized>(
    explicit: Option<usize>,
    max_align: usize,
) -> Result<usize, OpenError> {
    let size = match P::fixed_size() {
        Some(size) => size.max(1),
        None => explicit.unwrap_or(4096),
    };
    let align = P::identity(size).align as usize;
    if align > max_align {
        return Err(OpenError::InvalidConfig(format!(
            "payload alignment {align} exceeds the supported {max_align}"
        )));
    }
    Ok(size)
}

/// Declares a builder's options once: the struct `$opts` that holds them (a [`Common`] as
/// `common`, and a field with its default per option), and on the builder (whose fields are
/// `options: $opts` and `_p: PhantomData`) `new` and one setter per option, in the order listed.
/// An option is one of:
/// - `setter(arg: T) -> field: F = default;` its own field, set to `arg`, or with `=> value` to
///   an expression of `arg`;
/// - `setter(arg: T) -> common.field;` a field of [`Common`] (default there);
/// - `setter_a / setter_b = participants("Who", n, "Whom", m);` the two roles' participant
///   counts (fields named as the setters), with their defaults and the shared doc text.
macro_rules! options {
    ($opts:ident for [$($gen:tt)*] $builder:ident<$($p:ident),*> { $($entries:tt)* }) => {
        $crate::options::options!(@entry
            [
                #[doc = concat!("The options of a [`", stringify!($builder), "`].")]
                $opts
            ]
            [$($gen)*] [$builder<$($p),*>] [] [] [] $($entries)*);
    };
    (@entry $o:tt $g:tt $b:tt [$($f:tt)*] [$($d:tt)*] [$($s:tt)*]
        $a:ident / $z:ident = participants($aw:literal, $ad:literal, $zw:literal, $zd:literal);
        $($rest:tt)*
    ) => {
        $crate::options::options!(@entry $o $g $b
            [$($f)* $a: usize, $z: usize,]
            [$($d)* $a: $ad, $z: $zd,]
            [$($s)*
                #[doc = concat!($aw, " that may be registered at once (1 to 64, default ", $ad, ").")]
                pub fn $a(mut self, n: usize) -> Self {
                    self.options.$a = n;
                    self
                }
                #[doc = concat!($zw, " that may be registered at once (1 to 64, default ", $zd, ").")]
                pub fn $z(mut self, n: usize) -> Self {
                    self.options.$z = n;
                    self
                }
            ]
            $($rest)*);
    };
    (@entry $o:tt $g:tt $b:tt $f:tt $d:tt [$($s:tt)*]
        $(#[$m:meta])* $setter:ident($arg:ident: $ty:ty) -> common.$field:ident;
        $($rest:tt)*
    ) => {
        $crate::options::options!(@entry $o $g $b $f $d
            [$($s)*
                $(#[$m])*
                pub fn $setter(mut self, $arg: $ty) -> Self {
                    self.options.common.$field = $arg;
                    self
                }
            ]
            $($rest)*);
    };
    (@entry $o:tt $g:tt $b:tt [$($f:tt)*] [$($d:tt)*] [$($s:tt)*]
        $(#[$m:meta])* $setter:ident($arg:ident: $ty:ty) -> $field:ident: $fty:ty = $default:expr
            $(=> $value:expr)?;
        $($rest:tt)*
    ) => {
        $crate::options::options!(@entry $o $g $b
            [$($f)* $field: $fty,]
            [$($d)* $field: $default,]
            [$($s)*
                $(#[$m])*
                pub fn $setter(mut self, $arg: $ty) -> Self {
                    self.options.$field = $crate::options::options!(@value $arg $($value)?);
                    self
                }
            ]
            $($rest)*);
    };
    (@value $arg:ident) => { $arg };
    (@value $arg:ident $value:expr) => { $value };
    (@entry [$(#[$sm:meta])* $opts:ident] [$($gen:tt)*] [$($builder:tt)*]
        [$($f:tt)*] [$($d:tt)*] [$($s:tt)*]
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone)]
        struct $opts {
            common: $crate::options::Common,
            $($f)*
        }

        impl<$($gen)*> $($builder)* {
            pub(crate) fn new(backing: $crate::shm::Backing, name: &str) -> Self {
                let options = $opts {
                    common: $crate::options::Common::new(backing, name),
                    $($d)*
                };
                Self {
                    options,
                    _p: ::std::marker::PhantomData,
                }
            }

            $($s)*
        }
    };
}
pub(crate) use options;
