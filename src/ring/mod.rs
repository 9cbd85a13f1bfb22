//! Lock-free ring algorithms over raw cells. Each algorithm is one file, written against a small
//! trait of atomic cells so that the same code runs over shared memory and, under `cfg(loom)`, over
//! loom's model-checked atomics (taken from [`crate::loom`]).
//!
//! - [`broadcast`]: one writer, every reader reads every message in place (topics).
//! - [`call`]: calls posted by one client, each taken and answered by one of many servers
//!   (services).
//! - [`work`]: many producers, competing consumers, acknowledgements (queues).

pub mod broadcast;
pub mod call;
pub mod work;

/// What the rings' heap cells (each ring's `model::VecCells`, for tests and loom models) are made
/// of.
#[cfg(any(test, loom))]
pub mod words {
    use crate::loom::atomic::AtomicU64;

    /// Atomic words, one per slot, reader, pin or item.
    pub type Words = Vec<AtomicU64>;

    /// `n` words holding `x`.
    pub fn words(n: usize, x: u64) -> Words {
        (0..n).map(|_| AtomicU64::new(x)).collect()
    }
}

/// Accessors of a ring's `Cells` trait over a heap model's fields (`model::VecCells`), grouped
/// by how a word is found: `a, b;` (single words in fields of the same names), `a => fa, b => fb
/// [i];` (indexed by the accessor's argument `i`), or `a => fa, b => fb [index(args)];` (indexed
/// by the model's method `index(args)`, the accessor's arguments).
#[cfg(any(test, loom))]
macro_rules! word_accessors {
    () => {};
    (@via $name:ident $field:ident $index:ident ($($arg:ident: $t:ty),+)) => {
        fn $name(&self, $($arg: $t),+) -> &$crate::loom::atomic::AtomicU64 {
            &self.$field[self.$index($($arg),+)]
        }
    };
    ($($name:ident),+; $($rest:tt)*) => {
        $(fn $name(&self) -> &$crate::loom::atomic::AtomicU64 {
            &self.$name
        })+
        $crate::ring::word_accessors!($($rest)*);
    };
    ($($name:ident => $field:ident),+ [$i:ident]; $($rest:tt)*) => {
        $(fn $name(&self, $i: usize) -> &$crate::loom::atomic::AtomicU64 {
            &self.$field[$i]
        })+
        $crate::ring::word_accessors!($($rest)*);
    };
    ($($name:ident => $field:ident),+ [$index:ident $args:tt]; $($rest:tt)*) => {
        $($crate::ring::word_accessors!(@via $name $field $index $args);)+
        $crate::ring::word_accessors!($($rest)*);
    };
}
#[cfg(any(test, loom))]
pub(crate) use word_accessors;
