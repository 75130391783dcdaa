//! `/api/v1/devices/{mac}/resync` and `/api/v1/resync`: make one phone, or
//! every seen phone (of a model), fetch its files again, or reboot (see
//! [`crate::admin::resync`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::task::JoinSet;

use super::devices::{not_found, parse_mac};
use super::{Actor, AdminState, ApiError, ApiResult, Shared, Who, parse_body};
use crate::admin::resync::{self, DEFAULT_SIP_PORT, ResyncOutcome};
use crate::domain::mac::Mac;
use crate::domain::records::{Device, Invalid};

/// The optional body of a resync.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResyncRequest {
    /// The phone's SIP port, when it is not 5060.
    port: Option<u16>,
    /// Reboot rather than only fetch the files.
    #[serde(default)]
    reboot: bool,
}

/// `POST /devices/{mac}/resync`: a SIP NOTIFY with the vendor's resync (or
/// reboot) event to the address the phone last provisioned from.
pub(super) async fn one(
    state: Shared,
    Path(mac): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ResyncOutcome>> {
    let mac = parse_mac(&mac)?;
    let request: ResyncRequest = optional_body(&body)?;
    let outcome = resync_device(&state, mac, request.port, request.reboot).await?;
    Ok(Json(outcome))
}

/// Sends device `mac` its vendor's resync (or reboot) NOTIFY, to the
/// address it last provisioned from, on `port` (5060 when none).
pub(crate) async fn resync_device(
    state: &AdminState,
    mac: Mac,
    port: Option<u16>,
    reboot: bool,
) -> ApiResult<ResyncOutcome> {
    let device = state.store.device(mac)?.ok_or_else(|| not_found(mac))?;
    state.provisioner.flush_sightings()?;
    let notice = match notice_for(state, &device, port, reboot)? {
        Ok(notice) => notice,
        Err(Unreachable::CannotReboot) => {
            return Err(Unreachable::CannotReboot.reason(&device).into());
        }
        Err(unreachable) => return Err(ApiError::Conflict(unreachable.reason(&device))),
    };
    notice.send().await
}

/// The optional body of a bulk resync.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    /// Only the phones of this model.
    model: Option<String>,
    /// The phones' SIP port, when it is not 5060.
    port: Option<u16>,
    /// NOTIFYs sent per second, so the fetches that follow come as a
    /// trickle rather than a storm.
    per_second: Option<u32>,
    /// Reboot rather than only fetch the files.
    #[serde(default)]
    reboot: bool,
}

/// NOTIFYs per second when the request does not say.
const DEFAULT_PER_SECOND: u32 = 50;

/// What a bulk resync is about to do.
#[derive(Debug, Serialize)]
pub(crate) struct BulkPlan {
    /// Phones that will be sent a NOTIFY.
    pub queued: usize,
    /// At this pace.
    pub per_second: u32,
    /// So the last goes out after about this many seconds.
    pub seconds: u64,
    /// Phones left out: never seen, so no address to notify.
    pub never_seen: usize,
    /// Phones left out: their model has no resync event (with `reboot`:
    /// no reboot event).
    pub no_event: usize,
}

/// `POST /resync`: a NOTIFY to every phone (of a model) that has fetched
/// its files, paced, in the background. Answers at once with the plan;
/// each phone's outcome goes to the log.
pub(super) async fn all(
    state: Shared,
    Extension(Actor(actor)): Who,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<BulkPlan>)> {
    let request: BulkRequest = optional_body(&body)?;
    let per_second = request.per_second.unwrap_or(DEFAULT_PER_SECOND);
    if !(1..=1000).contains(&per_second) {
        return Err(Invalid::new("per_second", "must be 1 to 1000").into());
    }
    if let Some(id) = &request.model {
        let model = state
            .catalog
            .model(id)
            .ok_or_else(|| ApiError::NotFound(format!("model {id} not found")))?;
        if request.reboot && model.reboot_event.is_none() {
            return Err(cannot_reboot(&model.id).into());
        }
    }
    state.provisioner.flush_sightings()?;
    let devices = state
        .store
        .devices()?
        .into_iter()
        .filter(|device| request.model.as_ref().is_none_or(|m| *m == device.model));
    let target = match &request.model {
        Some(model) => format!("resync/model:{model}"),
        None => "resync/all".to_string(),
    };
    let paced = Paced {
        port: request.port,
        per_second,
        reboot: request.reboot,
    };
    let plan = resync_paced(&state, &actor, devices, paced, target).await?;
    Ok((StatusCode::ACCEPTED, Json(plan)))
}

/// How a bulk resync goes out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paced {
    /// The phones' SIP port, when it is not 5060.
    pub port: Option<u16>,
    /// NOTIFYs sent per second.
    pub per_second: u32,
    /// Reboot rather than only fetch the files.
    pub reboot: bool,
}

impl Default for Paced {
    fn default() -> Self {
        Paced {
            port: None,
            per_second: DEFAULT_PER_SECOND,
            reboot: false,
        }
    }
}

/// Queues a NOTIFY to each of `devices` that can take one, paced, in the
/// background, recorded in the audit log under `target`; gives the plan.
/// Sightings must be flushed first.
pub(crate) async fn resync_paced(
    state: &AdminState,
    actor: &str,
    devices: impl IntoIterator<Item = Device>,
    paced: Paced,
    target: String,
) -> ApiResult<BulkPlan> {
    let (mut notices, mut never_seen, mut no_event) = (Vec::new(), 0, 0);
    for device in devices {
        match notice_for(state, &device, paced.port, paced.reboot)? {
            Ok(notice) => notices.push(notice),
            Err(Unreachable::NeverSeen) => never_seen += 1,
            Err(Unreachable::NoEvent | Unreachable::CannotReboot) => no_event += 1,
        }
    }
    let per_second = paced.per_second;
    let plan = BulkPlan {
        queued: notices.len(),
        per_second,
        seconds: notices.len().div_ceil(per_second as usize) as u64,
        never_seen,
        no_event,
    };
    state
        .store
        .record_action(
            actor,
            "resync.bulk",
            target,
            json!({"queued": plan.queued, "per_second": per_second, "reboot": paced.reboot}),
        )
        .await?;
    tokio::spawn(send_paced(notices, per_second));
    Ok(plan)
}

/// Sends `notices` at `per_second`, each waiting for its answer on its own.
async fn send_paced(notices: Vec<Notice>, per_second: u32) {
    let mut pace = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut sending = JoinSet::new();
    let sent = notices.len();
    for notice in notices {
        pace.tick().await;
        sending.spawn(async move { notice.send().await.is_ok_and(|o| o.answer.is_some()) });
    }
    let mut answered = 0;
    while let Some(done) = sending.join_next().await {
        answered += usize::from(done.unwrap_or(false));
    }
    tracing::info!(sent, answered, "bulk resync done");
}

/// A NOTIFY ready to go.
struct Notice {
    mac: Mac,
    target: SocketAddr,
    user: String,
    event: String,
}

impl Notice {
    async fn send(&self) -> ApiResult<ResyncOutcome> {
        let outcome = resync::notify(self.target, &self.user, &self.event)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (mac, to) = (self.mac, self.target);
        tracing::info!(%mac, %to, event = %self.event, answer = ?outcome.answer, "resync sent");
        Ok(outcome)
    }
}

/// Why a phone cannot be notified.
enum Unreachable {
    /// Its model has no resync event.
    NoEvent,
    /// A reboot was asked for, and its model has no reboot event.
    CannotReboot,
    /// It never fetched its files: no address.
    NeverSeen,
}

impl Unreachable {
    fn reason(&self, device: &Device) -> Invalid {
        match self {
            Unreachable::NoEvent => Invalid::new(
                "model",
                format!("{} phones have no resync event", device.model),
            ),
            Unreachable::CannotReboot => cannot_reboot(&device.model),
            Unreachable::NeverSeen => Invalid::new(
                "mac",
                format!(
                    "device {} has never fetched its files: there is no address to notify",
                    device.mac
                ),
            ),
        }
    }
}

/// Why `model`'s phones cannot be sent a reboot.
fn cannot_reboot(model: &str) -> Invalid {
    Invalid::new(
        "reboot",
        format!(
            "{model} phones have no known reboot event: resync without \"reboot\", \
             or reboot them from the PBX or their web page"
        ),
    )
}

/// The NOTIFY for `device`: its vendor's resync or reboot event, to where it
/// last provisioned from, naming its line 1's SIP user.
fn notice_for(
    state: &AdminState,
    device: &Device,
    port: Option<u16>,
    reboot: bool,
) -> ApiResult<Result<Notice, Unreachable>> {
    let model = state.catalog.model(&device.model);
    let (event, missing) = if reboot {
        (
            model.and_then(|m| m.reboot_event.clone()),
            Unreachable::CannotReboot,
        )
    } else {
        (
            model.and_then(|m| m.resync_event.clone()),
            Unreachable::NoEvent,
        )
    };
    let Some(event) = event else {
        return Ok(Err(missing));
    };
    let Some(seen) = state.store.sighting(device.mac)? else {
        return Ok(Err(Unreachable::NeverSeen));
    };
    let user = match device.lines.first() {
        Some(line) => state.store.user(line.user)?.map(|u| u.sip.username),
        None => None,
    };
    Ok(Ok(Notice {
        mac: device.mac,
        target: SocketAddr::new(seen.ip, port.unwrap_or(DEFAULT_SIP_PORT)),
        user: user.unwrap_or_default(),
        event,
    }))
}

/// A JSON body, or the defaults when there is none.
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}
