//! The `pools` and `store` imports of the WIT world for WASM guests: each converts the
//! generated records to and from the host's own types and calls
//! [`crate::pools::api`], which serves the request the calling thread is on. Resource data
//! crosses as the JSON text it is stored as, never re-parsed.

use super::bindings::resman::jobber::pools as wit;
use super::bindings::resman::jobber::store as wit_store;
use super::StoreState;
use crate::pools::api;
use crate::pools::view::{LeaseView, StatusView};
use resman_sdk::pool::{AcquireRequest, PoolError, Want};

fn error(err: PoolError) -> wit::PoolError {
    match err {
        PoolError::UnknownPool(m) => wit::PoolError::UnknownPool(m),
        PoolError::UnknownLease(m) => wit::PoolError::UnknownLease(m),
        PoolError::UnknownResource(m) => wit::PoolError::UnknownResource(m),
        PoolError::Invalid(m) => wit::PoolError::Invalid(m),
        PoolError::Unavailable(m) => wit::PoolError::Unavailable(m),
        PoolError::Conflict(m) => wit::PoolError::Conflict(m),
        PoolError::Storage(m) => wit::PoolError::Storage(m),
    }
}

fn lease(view: LeaseView) -> wit::Lease {
    wit::Lease {
        id: view.id.to_string(),
        token: view.token,
        holder: view.holder,
        expires_at_ms: view.expires_at_ms,
        release_on_disconnect: view.release_on_disconnect,
        grants: view
            .grants
            .iter()
            .map(|grant| wit::Grant {
                pool: grant.pool.to_string(),
                id: grant.id.to_string(),
                data: grant.data.as_str().to_owned(),
            })
            .collect(),
    }
}

fn status(view: StatusView) -> wit::PoolStatus {
    wit::PoolStatus {
        pool: view.pool,
        free: view
            .free
            .into_iter()
            .map(|free| wit::Resource {
                id: free.id,
                data: free.data.as_str().to_owned(),
            })
            .collect(),
        held: view
            .held
            .into_iter()
            .map(|held| wit::Held {
                id: held.id,
                data: held.data.as_str().to_owned(),
                lease: held.lease.to_string(),
                token: held.token,
                holder: held.holder,
                expires_at_ms: held.expires_at_ms,
            })
            .collect(),
        waiting: view.waiting,
    }
}

type Answer<T> = Result<T, wit::PoolError>;

impl wit::Host for StoreState {
    fn add(&mut self, pool: String, resources: Vec<wit::Resource>) -> Answer<u32> {
        let resources = resources.into_iter().map(|r| (r.id, r.data)).collect();
        api::add(&pool, resources).map_err(error)
    }

    fn remove(&mut self, pool: String, ids: Vec<String>, force: bool) -> Answer<u32> {
        api::remove(&pool, &ids, force).map_err(error)
    }

    async fn acquire(&mut self, request: wit::AcquireRequest) -> Answer<wit::Lease> {
        let request = AcquireRequest {
            wants: request
                .wants
                .into_iter()
                .map(|want| Want {
                    pool: want.pool,
                    count: want.count,
                    ids: want.ids,
                })
                .collect(),
            ttl_ms: request.ttl_ms,
            wait_ms: request.wait_ms,
            request_id: request.request_id,
            release_on_disconnect: request.release_on_disconnect,
        };
        api::acquire_async(request).await.map(lease).map_err(error)
    }

    fn release(&mut self, id: String) -> Answer<wit::Lease> {
        api::release(&id).map(lease).map_err(error)
    }

    fn release_in(&mut self, pool: String, id: String) -> Answer<wit::Lease> {
        api::release_in(&pool, &id).map(lease).map_err(error)
    }

    fn release_resource(&mut self, pool: String, id: String) -> Answer<wit::Lease> {
        api::release_resource(&pool, &id).map(lease).map_err(error)
    }

    fn renew(&mut self, id: String, ttl_ms: u64) -> Answer<wit::Lease> {
        api::renew(&id, ttl_ms).map(lease).map_err(error)
    }

    fn get_lease(&mut self, id: String) -> Answer<wit::Lease> {
        api::lease(&id).map(lease).map_err(error)
    }

    fn status(&mut self, pool: String) -> Answer<wit::PoolStatus> {
        api::status(&pool).map(status).map_err(error)
    }
}

impl wit_store::Host for StoreState {
    fn get(&mut self, key: String) -> Option<String> {
        api::store_get(&key)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        api::store_set(&key, &value)
    }

    fn set_if(
        &mut self,
        key: String,
        expected: Option<String>,
        value: Option<String>,
    ) -> Result<bool, String> {
        api::store_set_if(&key, expected.as_deref(), value.as_deref())
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        api::store_delete(&key)
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        api::store_keys(&prefix)
    }
}
