//! What a topic carries: `Pod` values, byte strings ([`Bytes`]), or validated rkyv archives
//! ([`Rkyv`]). Each kind says how its bytes in a slot are checked and viewed.

use std::marker::PhantomData;

use super::layout::{PayloadKind, MAX_ALIGN};
use crate::error::SendError;
use crate::shm::TypeIdentity;

/// Marker for topics of variable-length byte messages (up to the topic's maximum message size).
#[derive(Debug, Clone, Copy)]
pub enum Bytes {}

/// Marker for topics of rkyv-archived `T`, validated (bytecheck) before a subscriber sees them.
pub struct Rkyv<T>(PhantomData<fn() -> T>);

impl<T> std::fmt::Debug for Rkyv<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rkyv<{}>", std::any::type_name::<T>())
    }
}

/// Keeps [`Payload`] closed: its methods read shared bytes under a contract only ringbus keeps.
mod sealed {
    pub trait Sealed {}
    impl<T: bytemuck::Pod> Sealed for T {}
    impl Sealed for super::Bytes {}
    impl<T> Sealed for super::Rkyv<T> {}
}

/// A kind of message a topic, service or queue can carry: every `T: bytemuck::Pod` (with
/// alignment at most 32; at most 16 in a durable queue), [`Bytes`] and [`Rkyv<T>`]. Sealed: it
/// cannot be implemented outside ringbus.
///
/// ```
/// fn carries<P: ringbus::Payload + ?Sized>() {}
/// carries::<[u64; 4]>();
/// carries::<ringbus::Bytes>();
/// ```
pub trait Payload: sealed::Sealed + 'static {
    /// What a received sample dereferences to.
    type View: ?Sized;
    /// What a sender passes to be copied or serialised in (`T` for `Pod` and `Rkyv<T>`, `[u8]`
    /// for [`Bytes`]).
    type Input: ?Sized;
    #[doc(hidden)]
    fn kind() -> PayloadKind;
    #[doc(hidden)]
    fn identity(max_message_size: usize) -> TypeIdentity;
    /// Fixed size of every message, or `None` for variable-length payloads.
    #[doc(hidden)]
    fn fixed_size() -> Option<usize>;
    /// Checks the `len` bytes at `ptr` (pinned, stable) and views them.
    ///
    /// # Safety
    /// `ptr` must be valid for reads of `len` bytes, aligned to at least the alignment
    /// [`Payload::identity`] declares (every pattern checks that alignment against where it
    /// places payloads when its builder opens: 32 for topics, services and in-memory queues, 16
    /// for durable queues), and not written while the returned reference lives.
    #[doc(hidden)]
    unsafe fn view<'a>(ptr: *const u8, len: usize) -> Result<&'a Self::View, String>;
    /// Writes `input` into `buf` (a loaned slot's payload area, aligned as for
    /// [`Payload::view`]) and returns the number of bytes written.
    #[doc(hidden)]
    fn encode(input: &Self::Input, buf: &mut [u8]) -> Result<usize, SendError>;
}

/// Payload kinds a loan is written through in place: every `Pod` type (the loan dereferences to
/// the value) and [`Bytes`] (to the loaned bytes). rkyv archives are serialised instead.
pub trait InPlace: Payload {
    /// The payload area as a view.
    ///
    /// # Safety
    /// `ptr` is valid for `len` bytes (`size_of` the type for a `Pod`), aligned for the type,
    /// and not written by anyone else while the view lives.
    #[doc(hidden)]
    unsafe fn in_place<'a>(ptr: *mut u8, len: usize) -> &'a Self::View;

    /// The payload area as a mutable view.
    ///
    /// # Safety
    /// As [`InPlace::in_place`], and not read by anyone else while the view lives either.
    #[doc(hidden)]
    unsafe fn in_place_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut Self::View;
}

impl<T: bytemuck::Pod> InPlace for T {
    #[inline]
    unsafe fn in_place<'a>(ptr: *mut u8, len: usize) -> &'a T {
        debug_assert!(len == std::mem::size_of::<T>() && ptr as usize % std::mem::align_of::<T>() == 0);
        // SAFETY: the caller's contract: size_of::<T>() readable bytes aligned for T, stable;
        // any bytes are a valid Pod.
        unsafe { &*(ptr as *const T) }
    }
    #[inline]
    unsafe fn in_place_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut T {
        debug_assert!(len == std::mem::size_of::<T>() && ptr as usize % std::mem::align_of::<T>() == 0);
        // SAFETY: as in `in_place`, and exclusive by the caller's contract.
        unsafe { &mut *(ptr as *mut T) }
    }
}

impl InPlace for Bytes {
    #[inline]
    unsafe fn in_place<'a>(ptr: *mut u8, len: usize) -> &'a [u8] {
        // SAFETY: the caller's contract: `len` readable, stable bytes.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
    #[inline]
    unsafe fn in_place_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
        // SAFETY: as in `in_place`, and exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// `Deref` and `DerefMut` of a loan (a struct with `ptr` and `len` fields naming its payload
/// area) to the payload it writes in place, for every [`InPlace`] payload kind.
macro_rules! loan_views {
    ($name:ident<$lt:lifetime, $($g:ident),*> writes $p:ident) => {
        impl<$($g: $crate::topic::Payload + ?Sized),*> std::ops::Deref for $name<$lt, $($g),*>
        where
            $p: $crate::topic::InPlace,
        {
            type Target = <$p as $crate::topic::Payload>::View;
            #[inline]
            fn deref(&self) -> &Self::Target {
                // SAFETY: `ptr` and `len` are the loaned payload area: in bounds (Region::ptr),
                // aligned for the payload type (checked when the handle was built), and ours
                // alone until the loan is sent or dropped.
                unsafe { <$p as $crate::topic::InPlace>::in_place(self.ptr, self.len) }
            }
        }
        impl<$($g: $crate::topic::Payload + ?Sized),*> std::ops::DerefMut for $name<$lt, $($g),*>
        where
            $p: $crate::topic::InPlace,
        {
            #[inline]
            fn deref_mut(&mut self) -> &mut Self::Target {
                // SAFETY: as in `deref`; `&mut self` makes the view exclusive.
                unsafe { <$p as $crate::topic::InPlace>::in_place_mut(self.ptr, self.len) }
            }
        }
    };
}
pub(crate) use loan_views;

/// `Deref` of a received message (a struct whose `view` field is the validated view of bytes it
/// holds in place) to that view.
macro_rules! received_view {
    ($name:ident<$lt:lifetime, $($g:ident),*> reads $p:ident) => {
        impl<$($g: $crate::topic::Payload + ?Sized),*> std::ops::Deref for $name<$lt, $($g),*> {
            type Target = <$p as $crate::topic::Payload>::View;
            #[inline]
            fn deref(&self) -> &Self::Target {
                self.view
            }
        }
    };
}
pub(crate) use received_view;

/// Copies `bytes` to the start of `buf`, or says it does not fit.
fn copy_in(bytes: &[u8], buf: &mut [u8]) -> Result<usize, SendError> {
    let max = buf.len();
    buf.get_mut(..bytes.len())
        .ok_or(SendError::TooLarge {
            len: bytes.len(),
            max,
        })?
        .copy_from_slice(bytes);
    Ok(bytes.len())
}

impl<T: bytemuck::Pod> Payload for T {
    type View = T;
    type Input = T;
    fn kind() -> PayloadKind {
        PayloadKind::Pod
    }
    fn identity(_: usize) -> TypeIdentity {
        TypeIdentity::new(
            std::any::type_name::<T>(),
            std::mem::size_of::<T>() as u64,
            std::mem::align_of::<T>() as u64,
        )
    }
    fn fixed_size() -> Option<usize> {
        Some(std::mem::size_of::<T>())
    }
    unsafe fn view<'a>(ptr: *const u8, len: usize) -> Result<&'a T, String> {
        if len != std::mem::size_of::<T>() {
            return Err(format!(
                "length {len} is not the size of {}",
                std::any::type_name::<T>()
            ));
        }
        debug_assert!(std::mem::align_of::<T>() <= MAX_ALIGN);
        debug_assert!(ptr as usize % std::mem::align_of::<T>() == 0);
        // SAFETY: the caller guarantees `len` (= size_of T) readable, stable bytes at a `ptr`
        // aligned for T (the alignment `identity` declares); T is Pod, so any bytes are a valid T.
        Ok(unsafe { &*(ptr as *const T) })
    }
    fn encode(input: &T, buf: &mut [u8]) -> Result<usize, SendError> {
        copy_in(bytemuck::bytes_of(input), buf)
    }
}

impl Payload for Bytes {
    type View = [u8];
    type Input = [u8];
    fn kind() -> PayloadKind {
        PayloadKind::Bytes
    }
    fn identity(_: usize) -> TypeIdentity {
        TypeIdentity::new("[u8]", 0, 1)
    }
    fn fixed_size() -> Option<usize> {
        None
    }
    unsafe fn view<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], String> {
        // SAFETY: the caller guarantees `len` readable, stable bytes at `ptr`.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
    fn encode(input: &[u8], buf: &mut [u8]) -> Result<usize, SendError> {
        copy_in(input, buf)
    }
}

impl<T> Payload for Rkyv<T>
where
    T: rkyv::Archive + 'static,
    T::Archived: for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>>
        + rkyv::Portable,
    T: for<'b, 'c> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::ser::writer::Buffer<'b>,
            rkyv::ser::allocator::ArenaHandle<'c>,
            rkyv::rancor::Error,
        >,
    >,
{
    type View = T::Archived;
    type Input = T;
    fn kind() -> PayloadKind {
        PayloadKind::Rkyv
    }
    fn identity(_: usize) -> TypeIdentity {
        TypeIdentity::new(std::any::type_name::<T>(), 0, 16)
    }
    fn fixed_size() -> Option<usize> {
        None
    }
    unsafe fn view<'a>(ptr: *const u8, len: usize) -> Result<&'a T::Archived, String> {
        // SAFETY: the caller guarantees `len` readable bytes at `ptr` that do not change while the
        // view lives, so validating them once is enough.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        rkyv::access::<T::Archived, rkyv::rancor::Error>(bytes).map_err(|e| e.to_string())
    }
    fn encode(input: &T, buf: &mut [u8]) -> Result<usize, SendError> {
        let buf = rkyv::ser::writer::Buffer::from(buf);
        let written = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(input, buf)
            .map_err(|e| SendError::Serialize(e.to_string()))?;
        Ok(written.len())
    }
}
