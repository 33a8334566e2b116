//! A lease lowered into the guest straight from the pool's [`LeaseView`], instead of through
//! the owned record `bindgen!` would generate.
//!
//! Every `acquire` and `release` answers a lease. The generated record would copy the
//! lease's id and each grant's pool, id and data into fresh `String`s and a `Vec`, only for
//! wasmtime to copy them again into guest memory and drop them: five host allocations per
//! lease on the hottest path. [`Lease`] lowers the view's shared names and data in place;
//! the lease id is formatted on the stack.
//!
//! wasmtime's derives cover the records. The leaves that lower as a WIT `string` from a type
//! of ours ([`LeaseText`], [`Data`], and a batch's request payload in `batch.rs`) forward to
//! `str` by hand through [`lower_as_string`], with the trait items
//! wasmtime keeps `#[doc(hidden)]` for its derives; they are checked against the WIT when a
//! component is linked, so a mismatch is a load error, never a bad call.

use crate::pools::record::{Data, LeaseId};
use crate::pools::view::{GrantView, LeaseView};
use std::sync::Arc;
use wasmtime::component::{ComponentType, Lower};

/// The WIT record `lease`, lowered from a [`LeaseView`] without copying its grants.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct Lease {
    id: LeaseText,
    token: u64,
    holder: u64,
    #[component(name = "expires-at-ms")]
    expires_at_ms: Option<u64>,
    #[component(name = "release-on-disconnect")]
    release_on_disconnect: bool,
    grants: Arc<[GrantView]>,
}

impl From<LeaseView> for Lease {
    fn from(view: LeaseView) -> Self {
        Lease {
            id: LeaseText(view.id),
            token: view.token,
            holder: view.holder,
            expires_at_ms: view.expires_at_ms,
            release_on_disconnect: view.release_on_disconnect,
            grants: view.grants,
        }
    }
}

/// A lease id, which the guest sees as its decimal text.
pub(crate) struct LeaseText(LeaseId);

/// The id's text, formatted into `buffer` (by `itoa`: `write!` through `fmt` costs ten
/// times as much, and this runs for every lease a guest receives).
fn lease_text<'a>(id: &LeaseText, buffer: &'a mut itoa::Buffer) -> &'a str {
    buffer.format(id.0)
}

/// The data's JSON text, as stored.
fn data_text<'a>(data: &'a Data, _: &mut itoa::Buffer) -> &'a str {
    data.as_str()
}

/// Implements `ComponentType` and `Lower` for `$type` as the WIT `string` that the function
/// `$text` makes of it, given a number-formatting buffer on the stack.
macro_rules! lower_as_string {
    ($type:ty, $text:expr) => {
        // SAFETY: the layout, ABI and type check are `str`'s, and lowering hands `str` the
        // text, so every value lowers exactly as the string it stands for.
        unsafe impl ::wasmtime::component::ComponentType for $type {
            type Lower = <str as ::wasmtime::component::ComponentType>::Lower;
            const ABI: ::wasmtime::component::__internal::CanonicalAbiInfo =
                <str as ::wasmtime::component::ComponentType>::ABI;

            fn typecheck(
                ty: &::wasmtime::component::__internal::InterfaceType,
                types: &::wasmtime::component::__internal::InstanceType<'_>,
            ) -> ::wasmtime::Result<()> {
                <str as ::wasmtime::component::ComponentType>::typecheck(ty, types)
            }
        }

        // SAFETY: forwards to `str`'s lowering, see above.
        unsafe impl ::wasmtime::component::Lower for $type {
            fn linear_lower_to_flat<T>(
                &self,
                cx: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                ty: ::wasmtime::component::__internal::InterfaceType,
                dst: &mut ::std::mem::MaybeUninit<Self::Lower>,
            ) -> ::wasmtime::Result<()> {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(self, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_flat(text, cx, ty, dst)
            }

            fn linear_lower_to_memory<T>(
                &self,
                cx: &mut ::wasmtime::component::__internal::LowerContext<'_, T>,
                ty: ::wasmtime::component::__internal::InterfaceType,
                offset: usize,
            ) -> ::wasmtime::Result<()> {
                let mut buffer = ::itoa::Buffer::new();
                let text: &str = $text(self, &mut buffer);
                ::wasmtime::component::Lower::linear_lower_to_memory(text, cx, ty, offset)
            }
        }
    };
}

pub(super) use lower_as_string;

lower_as_string!(LeaseText, lease_text);
lower_as_string!(Data, data_text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_id_is_its_decimal_text() {
        let mut buffer = itoa::Buffer::new();
        assert_eq!(lease_text(&LeaseText(0), &mut buffer), "0");
        assert_eq!(lease_text(&LeaseText(42), &mut buffer), "42");
        let max = lease_text(&LeaseText(u64::MAX), &mut buffer).to_owned();
        assert_eq!(max, u64::MAX.to_string());
    }
}
