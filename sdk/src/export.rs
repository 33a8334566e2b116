//! [`export_jobber!`](crate::export_jobber): the one line that turns an `impl Jobber` into a
//! plugin. It expands per target, so one source builds both kinds of plugin file:
//!
//! - `wasm32` (`cargo build --target wasm32-wasip2`): implements the WIT world's generated
//!   `Guest` trait through `wasm.rs` and exports it with wit-bindgen's export macro; the
//!   result is a component of the world `jobber-batched`, which the host calls once per
//!   batch.
//! - anything else: exports `resman_jobber_v1`, returning a static
//!   [`PluginV1`](crate::native::PluginV1) filled by `native::guest::plugin`.
//!
//! The logic lives in generic functions of this crate, not in the macro, so the macro is
//! a few lines per target and the functions are unit-tested.

/// Exports a [`Jobber`](crate::Jobber) as the plugin of the crate it is used in.
///
/// Use it once, in a crate with `crate-type = ["cdylib"]`. Built for `wasm32-wasip2` the
/// crate becomes a WASM component of the world in `sdk/wit/resman.wit`; built natively it
/// becomes a library exporting the C ABI v1 entry `resman_jobber_v1`
/// ([`native`](crate::native)). The host makes one instance (one `Default::default()`) per
/// request type it serves and keeps it between requests, so fields carry state.
///
/// # Example
///
/// ```
/// use resman_sdk::{export_jobber, JobError, Jobber, Request};
/// use serde_json::{json, Value};
///
/// /// Answers `{"cnt": n}`, n = 0, 1, 2, ... per instance.
/// #[derive(Default)]
/// struct Counter {
///     next: u64,
/// }
///
/// impl Jobber for Counter {
///     const TYPES: &'static [&'static str] = &["cntResponse"];
///
///     type Answer = Value;
///
///     fn handle(&mut self, _request: Request) -> Result<Self::Answer, JobError> {
///         let cnt = self.next;
///         self.next += 1;
///         Ok(json!({ "cnt": cnt }))
///     }
/// }
///
/// export_jobber!(Counter);
/// # // Natively the macro made the entry point the host looks up.
/// # let plugin = unsafe { &*resman_jobber_v1() };
/// # assert_eq!(plugin.abi_version, resman_sdk::native::ABI_VERSION);
/// ```
#[macro_export]
macro_rules! export_jobber {
    ($jobber:ty) => {
        $crate::__export_jobber_for_target!($jobber);
    };
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_jobber_for_target {
    ($jobber:ty) => {
        const _: () = {
            struct ResmanJobberExport;

            ::std::thread_local! {
                static JOBBER: ::core::cell::RefCell<::core::option::Option<$jobber>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::bindings::Guest for ResmanJobberExport {
                fn handles() -> ::std::vec::Vec<::std::string::String> {
                    $crate::wasm::handles::<$jobber>()
                }

                fn handle(
                    request: $crate::bindings::Request,
                ) -> ::core::result::Result<::std::string::String, $crate::bindings::JobError>
                {
                    JOBBER.with(|slot| $crate::wasm::handle::<$jobber>(slot, request))
                }

                fn serve_batch() {
                    JOBBER.with($crate::wasm::serve_batch::<$jobber>)
                }
            }

    $crate::bindings::export!(ResmanJobberExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_jobber_for_target {
    ($jobber:ty) => {
        /// The entry point the resman host looks up: the C ABI v1 table of this plugin.
        #[unsafe(no_mangle)]
        pub extern "C" fn resman_jobber_v1() -> *const $crate::native::PluginV1 {
            static PLUGIN: $crate::native::PluginV1 = $crate::native::guest::plugin::<$jobber>();
            &PLUGIN
        }
    };
}
