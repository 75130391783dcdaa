//! Reading ahead for a phone's render: its device, its lines' users, its
//! sighting and its last good files in one statement, kept in the node's
//! cache, so the render's own reads (one after another, on the render
//! threads) find them there instead of each waiting for the database.

use super::Shared;
use super::cache::{Cached, Kind};
use super::write::last_good_key;
use crate::domain::mac::Mac;
use crate::store::StoreError;

/// One row: the device (null when there is none), its sighting, the
/// users its lines name, and its last good files.
const READ_AHEAD: &str = "\
SELECT d.doc::text, s.doc::text, u.ids, u.docs, g.files, g.docs \
FROM (SELECT $1::text AS mac) AS asked \
LEFT JOIN devices d ON d.mac = asked.mac \
LEFT JOIN sightings s ON s.mac = asked.mac \
LEFT JOIN LATERAL (SELECT array_agg(id) AS ids, array_agg(doc::text) AS docs FROM users \
    WHERE id IN (SELECT (line->>'user')::bigint FROM json_array_elements(d.doc->'lines') AS line)) u ON true \
LEFT JOIN LATERAL (SELECT array_agg(file) AS files, array_agg(doc::text) AS docs FROM last_good \
    WHERE last_good.mac = asked.mac) g ON true";

/// The records a render of `mac`'s files reads, as the cache keeps them;
/// for a MAC that is no device, only that.
pub(super) async fn fetch(
    shared: &Shared,
    mac: Mac,
    with_sighting: bool,
) -> Result<Vec<(Kind, String, Cached)>, StoreError> {
    let key = mac.to_string();
    let client = shared.client().await?;
    let statement = client.prepare_cached(READ_AHEAD).await?;
    let row = client.query_one(&statement, &[&key]).await?;
    let device: Option<String> = row.get(0);
    let Some(device) = device else {
        return Ok(vec![(Kind::Device, key.clone(), None)]);
    };
    let sighting: Option<String> = row.get(1);
    let user_ids: Vec<i64> = row.get::<_, Option<_>>(2).unwrap_or_default();
    let users: Vec<String> = row.get::<_, Option<_>>(3).unwrap_or_default();
    let files: Vec<String> = row.get::<_, Option<_>>(4).unwrap_or_default();
    let goods: Vec<String> = row.get::<_, Option<_>>(5).unwrap_or_default();
    let mut found = vec![(Kind::Device, key.clone(), Some(device.into()))];
    // Kept only for a render that reads it: a phone that says its firmware
    // in its User-Agent would only fill the cache with it.
    if with_sighting {
        found.push((Kind::Sighting, key.clone(), sighting.map(Into::into)));
    }
    found.extend(
        user_ids
            .into_iter()
            .zip(users)
            .map(|(id, user)| (Kind::User, id.to_string(), Some(user.into()))),
    );
    found.extend(
        files
            .into_iter()
            .zip(goods)
            .map(|(file, good)| (Kind::LastGood, last_good_key(mac, &file), Some(good.into()))),
    );
    // Last: the marker must not be kept without the files it vouches for.
    found.push((Kind::LastGoodListed, key.clone(), Some("".into())));
    Ok(found)
}
