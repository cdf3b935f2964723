//! Where a hub fetches a block it does not hold: a sans-IO decision from what it knows. Each
//! verified tree node a hub caches tells it which publisher the node's children belong to
//! (hints); the publisher's mirrored head says where that publisher's blocks are (a node that
//! vouched for them by signature, or another region's hub). A block with no usable hint is
//! tried at a few vouched nodes and then at every other region's hub, in turn.
//!
//! No socket and no clock: the hub machine ([`crate::machine::HubMachine`]) passes the heads, the
//! trunk's regions and the time; the driver fetches what [`Router::route`] says.

use std::collections::{BTreeMap, HashMap};

use meridian_registry::Cid;

use crate::heads::{HeadMirror, Upstream};

/// Most CID-to-publisher hints kept; past it they are forgotten all at once (they come back
/// as the next fetched tree nodes are cached).
pub const HINTS_MAX: usize = 2_000_000;
/// Nodes tried (besides other hubs) for a block whose publisher is unknown.
pub const FALLBACK_NODES_MAX: usize = 2;

/// Where to ask for some blocks: upstreams to try in turn (with the publisher whose blocks
/// each serves, when known), and the CIDs.
pub type Route = (Vec<(Upstream, Option<String>)>, Vec<Cid>);

/// What [`Router::route`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// CIDs grouped by the one upstream their publisher's head names.
    pub known: Vec<Route>,
    /// CIDs of no known publisher (or one without an upstream), with the upstreams to try.
    pub unknown: Route,
}

/// The hub's routing state: which publisher each hinted block belongs to.
#[derive(Debug, Default)]
pub struct Router {
    hints: HashMap<Cid, String>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `cids` belong to `publisher` (the links of one of its verified tree nodes).
    pub fn hint(&mut self, publisher: &str, cids: impl IntoIterator<Item = Cid>) {
        if self.hints.len() > HINTS_MAX {
            self.hints.clear();
        }
        for cid in cids {
            self.hints.insert(cid, publisher.to_owned());
        }
    }

    /// Hints held.
    pub fn len(&self) -> usize {
        self.hints.len()
    }

    /// Whether no hint is held.
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// Groups `cids` by the upstream of the publisher they belong to; the rest go to the
    /// fallbacks: every node that vouched for its blocks (at most [`FALLBACK_NODES_MAX`]), then
    /// every other region's hub (`regions`), in that order.
    pub fn route(
        &self,
        cids: Vec<Cid>,
        heads: &HeadMirror,
        regions: &[String],
        now: i64,
    ) -> Routes {
        let mut groups: BTreeMap<String, Route> = BTreeMap::new();
        let mut unrouted = Vec::new();
        for cid in cids {
            let head = self.hints.get(&cid).and_then(|p| heads.get(p));
            match head {
                Some(head) if head.upstream != Upstream::Unknown => {
                    groups
                        .entry(upstream_key(&head.upstream))
                        .or_insert_with(|| {
                            (
                                vec![(head.upstream.clone(), Some(head.publisher.clone()))],
                                Vec::new(),
                            )
                        })
                        .1
                        .push(cid);
                }
                _ => unrouted.push(cid),
            }
        }
        let mut fallbacks: Vec<(Upstream, Option<String>)> = Vec::new();
        if !unrouted.is_empty() {
            for head in heads.all(now) {
                if let Upstream::Node(_) = head.upstream
                    && !fallbacks.iter().any(|(u, _)| *u == head.upstream)
                {
                    fallbacks.push((head.upstream.clone(), Some(head.publisher.clone())));
                }
            }
            fallbacks.truncate(FALLBACK_NODES_MAX);
            fallbacks.extend(regions.iter().map(|r| (Upstream::Hub(r.clone()), None)));
        }
        Routes {
            known: groups.into_values().collect(),
            unknown: (fallbacks, unrouted),
        }
    }
}

/// A stable text form of an upstream, to group by.
fn upstream_key(upstream: &Upstream) -> String {
    match upstream {
        Upstream::Node(url) => format!("node:{url}"),
        Upstream::Hub(region) => format!("hub:{region}"),
        Upstream::Unknown => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_registry::commit::CommitBody;
    use meridian_registry::keys::Keypair;

    const NOW: i64 = 1_800_000_000;

    fn head(mirror: &mut HeadMirror, seed: u8, upstream: Upstream) -> String {
        let key = Keypair::from_secret(&[seed; 32]);
        let commit = CommitBody {
            publisher: key.public(),
            seq: 1,
            data: meridian_registry::ids::dag_cbor_cid(&[seed]),
            prev: None,
            created_at: NOW - 10,
            expires_at: NOW + 3600,
        }
        .sign(&key)
        .unwrap();
        mirror.offer(&commit.to_block(), upstream, NOW).unwrap();
        key.did()
    }

    fn cid(n: u8) -> Cid {
        meridian_registry::ids::dag_cbor_cid(&[n, n])
    }

    #[test]
    fn hinted_blocks_go_to_their_publishers_upstream_and_the_rest_to_the_fallbacks() {
        let mut heads = HeadMirror::new(100, 300);
        let a = head(&mut heads, 1, Upstream::Node("http://127.0.0.1:1".into()));
        let b = head(&mut heads, 2, Upstream::Hub("us-east".into()));
        // A third publisher vouches for a node too: a fallback for blocks of unknown origin.
        head(&mut heads, 3, Upstream::Node("http://127.0.0.1:3".into()));
        let unknown_upstream = head(&mut heads, 4, Upstream::Unknown);
        let mut router = Router::new();
        router.hint(&a, [cid(1), cid(2)]);
        router.hint(&b, [cid(3)]);
        router.hint(&unknown_upstream, [cid(4)]);
        let regions = vec!["us-east".to_owned(), "ap-south".to_owned()];
        let routes = router.route(
            vec![cid(1), cid(3), cid(2), cid(4), cid(5)],
            &heads,
            &regions,
            NOW,
        );
        assert_eq!(routes.known.len(), 2);
        let of = |upstream: Upstream| {
            routes
                .known
                .iter()
                .find(|(ups, _)| ups[0].0 == upstream)
                .map(|(_, cids)| cids.clone())
                .unwrap()
        };
        assert_eq!(
            of(Upstream::Node("http://127.0.0.1:1".into())),
            [cid(1), cid(2)]
        );
        assert_eq!(of(Upstream::Hub("us-east".into())), [cid(3)]);
        // A publisher without an upstream, and an unhinted block: the vouched nodes (at most
        // two), then every other region's hub.
        let (fallbacks, cids) = &routes.unknown;
        assert_eq!(cids, &[cid(4), cid(5)]);
        let upstreams: Vec<&Upstream> = fallbacks.iter().map(|(u, _)| u).collect();
        assert_eq!(upstreams.len(), FALLBACK_NODES_MAX + regions.len());
        assert!(matches!(upstreams[0], Upstream::Node(_)));
        assert!(matches!(upstreams[1], Upstream::Node(_)));
        assert_eq!(upstreams[2], &Upstream::Hub("us-east".into()));
        assert_eq!(upstreams[3], &Upstream::Hub("ap-south".into()));
    }

    #[test]
    fn nothing_unrouted_means_no_fallbacks() {
        let mut heads = HeadMirror::new(10, 300);
        let a = head(&mut heads, 1, Upstream::Node("http://127.0.0.1:1".into()));
        let mut router = Router::new();
        router.hint(&a, [cid(1)]);
        let routes = router.route(vec![cid(1)], &heads, &["eu".to_owned()], NOW);
        assert_eq!(routes.unknown, (Vec::new(), Vec::new()));
        assert_eq!(router.len(), 1);
    }
}
