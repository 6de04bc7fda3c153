//! `grpm events` on the local agent (a fleet's streams are merged in `follow`) and
//! `grpm notify`, and how one event is printed.

use super::{
    action::check_target,
    args::EventsArgs,
    failure::{out, Failure},
    fleet::{self, prefix, Place},
    follow, render,
};
use crate::{
    client::{self, Subscription},
    model::{validate_name, Env, Event},
};

pub async fn events(place: &Place, args: EventsArgs, json: bool) -> Result<(), Failure> {
    for app in &args.apps {
        validate_name(app).map_err(Failure::Usage)?;
    }
    let sub = Subscription {
        from_seq: args.from,
        recent: args.recent,
        no_follow: args.no_follow,
        apps: args.apps,
        kinds: args.kinds,
    };
    let (home, t) = match place {
        Place::Local(home, t) => (home, t),
        Place::Fleet {
            hosts, timeouts, ..
        } => return follow::merged(hosts, *timeouts, sub, json).await,
    };
    let mut c = client::connect_local_with(home, true, t.request).await?;
    let mut last: Option<u64> = None;
    let mut reconnect = follow::Reconnect::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // When the agent goes away without ending the stream (a crash, an upgrade: its keeper
    // starts the next one), reconnect and resume after the last event printed.
    loop {
        let mut req = sub.clone();
        if let Some(seq) = last {
            req.from_seq = Some(seq);
        }
        let why = match c.subscribe(&req).await {
            Err(e) if sub.no_follow || e.code().is_some_and(follow::permanent) => {
                return Err(e.into())
            }
            Err(e) => Failure::from(e),
            Ok(mut stream) => {
                if reconnect.connected() {
                    let after = last.map_or_else(String::new, |s| format!(" after seq {s}"));
                    eprintln!("grpm: reconnected; resuming{after}");
                }
                loop {
                    let next = tokio::select! {
                        n = stream.next() => n,
                        _ = &mut ctrl_c => return Ok(()),
                    };
                    match next {
                        Ok(Some(e)) => {
                            last = Some(e.seq);
                            print_event(&e, None, json)?;
                        }
                        Ok(None) => return Ok(()),
                        Err(e) if sub.no_follow => return Err(e.into()),
                        Err(e) => break Failure::from(e),
                    }
                }
            }
        };
        if !super::local::may_come_back(home) {
            return Err(why);
        }
        if let Some(text) = reconnect.dropped(&why) {
            eprintln!("grpm: {text}");
        }
        c = loop {
            tokio::select! {
                () = reconnect.wait() => {}
                _ = &mut ctrl_c => return Ok(()),
            }
            match client::connect_local_with(home, false, t.request).await {
                Ok(c) => break c,
                Err(e) if !super::local::may_come_back(home) => return Err(e.into()),
                Err(_) => {}
            }
        };
    }
}

/// One event: a JSON line, or a text line ("box1: " first on a fleet) with control characters
/// shown as escapes (always: one event is one line, and it may come from an agent that let
/// them through).
pub fn print_event(e: &Event, host: Option<&str>, json: bool) -> Result<(), Failure> {
    if json {
        out(render::json(&render::event_json(e, host)))
    } else {
        match host {
            Some(h) => out(format_args!(
                "{h}: {}",
                render::visible(&render::event_line(e))
            )),
            None => out(render::visible(&render::event_line(e))),
        }
    }
}

/// `grpm notify TARGET --action A [--message M] [--data K=V]...`
pub async fn notify(
    place: &Place,
    target: String,
    action: String,
    message: String,
    data: Env,
    json: bool,
) -> Result<(), Failure> {
    check_target(&target)?;
    let outcomes = place
        .each(|mut c| {
            let (target, action, message, data) = (
                target.clone(),
                action.clone(),
                message.clone(),
                data.clone(),
            );
            async move { Ok(c.notify(&target, &action, &message, &data).await?) }
        })
        .await;
    let (oks, failed) = fleet::split(outcomes)?;
    for (host, events) in &oks {
        for e in events {
            if json {
                out(render::json(&render::event_json(e, host.as_deref())))?;
            } else {
                out(format_args!(
                    "{}{}",
                    prefix(host),
                    render::visible(&render::event_line(e))
                ))?;
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
