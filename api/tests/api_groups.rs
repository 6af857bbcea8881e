//! End-to-end tests of device groups and tags in the application HTTP API
//! (spec/device-management.md §6): the real `fleetgate` binary and a real HTTP client. Group
//! CRUD, membership and its limits, tag binding and queries by tag, and the separation of
//! applications.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{TestServer, assert_error, product_body};

/// Like [`assert_error`], and the message names `needle` (the offending field).
fn assert_400_naming(what: &str, answer: (u16, Value), needle: &str) {
    let body = assert_error(what, answer, 400);
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains(needle), "{what}: {needle:?} not in {msg:?}");
}

/// Registers product `product` and devices `{product}_{node}` for each node, as `key`.
fn register(server: &TestServer, key: &str, product: &str, nodes: &[&str]) {
    let (status, p) = server.call("POST", "/products", key, Some(&product_body(product)));
    assert_eq!(status, 201, "{p}");
    for node in nodes {
        let (status, d) = server.call(
            "POST",
            "/devices",
            key,
            Some(&json!({"product_id": product, "node_id": node})),
        );
        assert_eq!(status, 201, "{d}");
    }
}

/// The `field` of each item of the list `key` of a listing.
fn column(body: &Value, key: &str, field: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} list: {body}"))
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

/// The device ids of a listing at `path`.
fn device_ids(server: &TestServer, key: &str, path: &str) -> Vec<String> {
    let (status, body) = server.call("GET", path, key, None);
    assert_eq!(status, 200, "{path}: {body}");
    column(&body, "devices", "device_id")
}

/// Calls `POST .../device-group/{group}/action?action_id={action}&device_id={device}`.
fn member(server: &TestServer, key: &str, group: &str, action: &str, device: &str) -> (u16, Value) {
    server.call(
        "POST",
        &format!("/device-group/{group}/action?action_id={action}&device_id={device}"),
        key,
        None,
    )
}

/// The device ids carrying `tags` (`POST .../resources`), every page of `limit` read.
fn by_tags(server: &TestServer, key: &str, tags: &Value, limit: usize) -> Vec<String> {
    let body = json!({"resource_type": "device", "tags": tags});
    let mut ids = Vec::new();
    let mut marker: Option<String> = None;
    for _ in 0..100 {
        let path = match &marker {
            None => format!("/resources?limit={limit}"),
            Some(m) => format!("/resources?limit={limit}&marker={m}"),
        };
        let (status, page) = server.call("POST", &path, key, Some(&body));
        assert_eq!(status, 200, "{tags}: {page}");
        let items = page["resources"].as_array().unwrap();
        assert!(items.len() <= limit, "{page}");
        for r in items {
            assert_eq!(r["resource_id"], r["device_id"], "{r}");
        }
        ids.extend(column(&page, "resources", "resource_id"));
        match page["next_marker"].as_str() {
            Some(m) => marker = Some(m.to_owned()),
            None => return ids,
        }
    }
    panic!("no last page for {tags}");
}

#[test]
fn groups_crud_and_membership() {
    let server = TestServer::start("io_uring", &json!({}), &["storage.max_groups_per_device=2"]);
    let admin = server.admin_key();
    register(&server, &admin, "wm", &["n1", "n2", "n3"]);

    // Create: a generated id, or the one given; a duplicate id conflicts.
    let (status, north) = server.call(
        "POST",
        "/device-group",
        &admin,
        Some(&json!({"name": "north", "description": "meters of the north"})),
    );
    assert_eq!(status, 201, "{north}");
    let north_id = north["group_id"].as_str().unwrap().to_owned();
    assert_eq!(north_id.len(), 32, "{north}");
    assert_eq!(
        (&north["app_id"], &north["device_count"]),
        (&json!("default"), &json!(0)),
        "{north}"
    );
    let (status, south) = server.call(
        "POST",
        "/device-group",
        &admin,
        Some(&json!({"group_id": "south", "name": "south", "app_id": "default"})),
    );
    assert_eq!(status, 201, "{south}");
    assert_eq!(south["group_id"], "south");
    let dup = assert_error(
        "duplicate group",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"group_id": "south", "name": "again"})),
        ),
        409,
    );
    assert_eq!(dup["error_code"], "FLEETGATE.ALREADY_EXISTS");

    // Read, list (paged), update.
    let (status, got) = server.call("GET", "/device-group/south", &admin, None);
    assert_eq!((status, &got["name"]), (200, &json!("south")), "{got}");
    let (status, all) = server.call("GET", "/device-group", &admin, None);
    assert_eq!(status, 200, "{all}");
    let mut names = column(&all, "device_groups", "name");
    names.sort();
    assert_eq!(names, ["north", "south"]);
    assert!(all.get("next_marker").is_none(), "{all}");
    let (status, first) = server.call("GET", "/device-group?limit=1", &admin, None);
    assert_eq!(status, 200, "{first}");
    let marker = first["next_marker"].as_str().expect("a second page");
    let (status, second) = server.call(
        "GET",
        &format!("/device-group?limit=1&marker={marker}"),
        &admin,
        None,
    );
    assert_eq!(status, 200, "{second}");
    let mut paged = column(&first, "device_groups", "name");
    paged.extend(column(&second, "device_groups", "name"));
    paged.sort();
    assert_eq!(paged, names);
    let (status, upd) = server.call(
        "PUT",
        "/device-group/south",
        &admin,
        Some(&json!({"name": "the south", "description": "warm"})),
    );
    assert_eq!(status, 200, "{upd}");
    assert_eq!(
        (&upd["name"], &upd["description"]),
        (&json!("the south"), &json!("warm"))
    );
    let (_, got) = server.call("GET", "/device-group/south", &admin, None);
    assert_eq!(got["name"], "the south", "{got}");

    // Membership: add (twice is a no-op), list, agree with the device listing.
    for d in ["wm_n1", "wm_n2", "wm_n1"] {
        let (status, g) = member(&server, &admin, "south", "addDevice", d);
        assert_eq!(status, 200, "{g}");
    }
    let (_, got) = server.call("GET", "/device-group/south", &admin, None);
    assert_eq!(got["device_count"], 2, "{got}");
    let members = device_ids(&server, &admin, "/device-group/south/devices");
    assert_eq!(members, ["wm_n1", "wm_n2"]);
    assert_eq!(
        device_ids(&server, &admin, "/devices?group_id=south"),
        members
    );
    let (_, page) = server.call("GET", "/device-group/south/devices?limit=1", &admin, None);
    assert_eq!(column(&page, "devices", "device_id"), ["wm_n1"]);
    let marker = page["next_marker"].as_str().expect("a second page");
    assert_eq!(
        device_ids(
            &server,
            &admin,
            &format!("/device-group/south/devices?limit=1&marker={marker}")
        ),
        ["wm_n2"]
    );
    let (_, dev) = server.call("GET", "/devices/wm_n1", &admin, None);
    assert_eq!(dev["groups"], json!(["south"]), "{dev}");

    // Remove (twice is a no-op).
    for _ in 0..2 {
        let (status, g) = member(&server, &admin, "south", "removeDevice", "wm_n1");
        assert_eq!((status, &g["device_count"]), (200, &json!(1)), "{g}");
    }
    assert_eq!(
        device_ids(&server, &admin, "/device-group/south/devices"),
        ["wm_n2"]
    );
    assert_eq!(
        device_ids(&server, &admin, "/devices?group_id=south"),
        ["wm_n2"]
    );

    // A device belongs to at most storage.max_groups_per_device (2 here) groups.
    let (status, _) = member(&server, &admin, &north_id, "addDevice", "wm_n2");
    assert_eq!(status, 200);
    let (status, third) = server.call(
        "POST",
        "/device-group",
        &admin,
        Some(&json!({"group_id": "third", "name": "third"})),
    );
    assert_eq!(status, 201, "{third}");
    let limit = assert_error(
        "groups per device",
        member(&server, &admin, "third", "addDevice", "wm_n2"),
        409,
    );
    assert_eq!(limit["error_code"], "FLEETGATE.LIMIT_EXCEEDED", "{limit}");

    // Delete: the group goes, its members stay and leave it.
    let (status, _) = server.call("DELETE", "/device-group/south", &admin, None);
    assert_eq!(status, 204);
    assert_error(
        "deleted group",
        server.call("GET", "/device-group/south", &admin, None),
        404,
    );
    let (_, dev) = server.call("GET", "/devices/wm_n2", &admin, None);
    assert_eq!(dev["groups"], json!([north_id]), "{dev}");
    assert!(device_ids(&server, &admin, "/devices?group_id=south").is_empty());

    // Unknown groups and devices answer 404 JSON.
    for (method, path) in [
        ("GET", "/device-group/nope"),
        ("DELETE", "/device-group/nope"),
        ("GET", "/device-group/nope/devices"),
        (
            "POST",
            "/device-group/nope/action?action_id=addDevice&device_id=wm_n1",
        ),
    ] {
        assert_error(path, server.call(method, path, &admin, None), 404);
    }
    assert_error(
        "update unknown",
        server.call(
            "PUT",
            "/device-group/nope",
            &admin,
            Some(&json!({"name": "x"})),
        ),
        404,
    );
    assert_error(
        "unknown device",
        member(&server, &admin, "third", "addDevice", "wm_nope"),
        404,
    );
    assert_error(
        "remove unknown device",
        member(&server, &admin, "third", "removeDevice", "wm_nope"),
        404,
    );

    // Malformed requests answer 400 JSON, naming the field where there is one.
    assert_error(
        "truncated body",
        server.call_raw(
            "POST",
            "/device-group",
            &admin,
            "application/json",
            Some("{\"name\":"),
        ),
        400,
    );
    assert_error(
        "not an object",
        server.call("POST", "/device-group", &admin, Some(&json!([1, 2]))),
        400,
    );
    assert_400_naming(
        "unknown field",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"name": "x", "super_group_id": "north"})),
        ),
        "super_group_id",
    );
    assert_400_naming(
        "missing name",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"description": "x"})),
        ),
        "name",
    );
    assert_400_naming(
        "name of the wrong type",
        server.call("POST", "/device-group", &admin, Some(&json!({"name": 7}))),
        "name",
    );
    assert_400_naming(
        "empty name",
        server.call("POST", "/device-group", &admin, Some(&json!({"name": ""}))),
        "name",
    );
    assert_400_naming(
        "long name",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"name": "x".repeat(65)})),
        ),
        "name",
    );
    assert_400_naming(
        "bad group id",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"group_id": "a b", "name": "x"})),
        ),
        "group_id",
    );
    assert_400_naming(
        "unknown field in an update",
        server.call(
            "PUT",
            &format!("/device-group/{north_id}"),
            &admin,
            Some(&json!({"device_count": 9})),
        ),
        "device_count",
    );
    assert_400_naming(
        "unknown action",
        member(&server, &admin, "third", "moveDevice", "wm_n1"),
        "action_id",
    );
    assert_error(
        "missing device_id",
        server.call(
            "POST",
            "/device-group/third/action?action_id=addDevice",
            &admin,
            None,
        ),
        400,
    );
    assert_error(
        "bad device_id",
        member(&server, &admin, "third", "addDevice", "a%20b"),
        400,
    );
    assert_error(
        "bad path id",
        server.call("GET", "/device-group/a%20b", &admin, None),
        400,
    );
    assert_error(
        "limit 0",
        server.call("GET", "/device-group?limit=0", &admin, None),
        400,
    );
    assert_error(
        "claims another application",
        server.call(
            "POST",
            "/device-group",
            &admin,
            Some(&json!({"name": "x", "app_id": "someone-else"})),
        ),
        403,
    );
}

#[test]
fn applications_cannot_touch_each_others_groups_or_devices() {
    let server = TestServer::start("io_uring", &json!({}), &[]);
    let admin = server.admin_key();
    let (status, created) =
        server.call("POST", "/apps", &admin, Some(&json!({"name": "tenant-b"})));
    assert_eq!(status, 201, "{created}");
    let other = created["api_key"]["api_key"].as_str().unwrap().to_owned();

    register(&server, &admin, "wm", &["n1"]);
    register(&server, &other, "theirs", &["x"]);
    for (key, group) in [(&admin, "ours"), (&other, "their-group")] {
        let (status, g) = server.call(
            "POST",
            "/device-group",
            key,
            Some(&json!({"group_id": group, "name": group})),
        );
        assert_eq!(status, 201, "{g}");
    }
    let (status, _) = member(&server, &admin, "ours", "addDevice", "wm_n1");
    assert_eq!(status, 200);
    let (status, _) = server.call(
        "POST",
        "/tags/bind-resource",
        &admin,
        Some(&json!({"resource_type": "device", "resource_id": "wm_n1",
                     "tags": [{"tag_key": "floor", "tag_value": "3"}]})),
    );
    assert_eq!(status, 200);

    // The other application sees only its own group, and none of ours.
    let (_, list) = server.call("GET", "/device-group", &other, None);
    assert_eq!(column(&list, "device_groups", "group_id"), ["their-group"]);
    assert_error(
        "read",
        server.call("GET", "/device-group/ours", &other, None),
        404,
    );
    assert_error(
        "members",
        server.call("GET", "/device-group/ours/devices", &other, None),
        404,
    );
    assert_error(
        "update",
        server.call(
            "PUT",
            "/device-group/ours",
            &other,
            Some(&json!({"name": "mine now"})),
        ),
        404,
    );
    assert_error(
        "delete",
        server.call("DELETE", "/device-group/ours", &other, None),
        404,
    );
    assert_error(
        "add its device to our group",
        member(&server, &other, "ours", "addDevice", "theirs_x"),
        404,
    );
    assert_error(
        "remove our device from our group",
        member(&server, &other, "ours", "removeDevice", "wm_n1"),
        404,
    );
    assert_error(
        "add our device to its group",
        member(&server, &other, "their-group", "addDevice", "wm_n1"),
        404,
    );
    assert_error(
        "add its device to our group, as us",
        member(&server, &admin, "ours", "addDevice", "theirs_x"),
        404,
    );
    assert!(device_ids(&server, &other, "/devices?group_id=ours").is_empty());

    // Nor our tags.
    assert_error(
        "bind on our device",
        server.call(
            "POST",
            "/tags/bind-resource",
            &other,
            Some(&json!({"resource_type": "device", "resource_id": "wm_n1",
                         "tags": [{"tag_key": "k", "tag_value": "v"}]})),
        ),
        404,
    );
    assert_error(
        "unbind on our device",
        server.call(
            "POST",
            "/tags/unbind-resource",
            &other,
            Some(&json!({"resource_type": "device", "resource_id": "wm_n1",
                         "tag_keys": ["floor"]})),
        ),
        404,
    );
    assert!(by_tags(&server, &other, &json!([{"tag_key": "floor"}]), 50).is_empty());
    assert_eq!(
        by_tags(&server, &admin, &json!([{"tag_key": "floor"}]), 50),
        ["wm_n1"]
    );

    // Ours is untouched.
    let (_, ours) = server.call("GET", "/device-group/ours", &admin, None);
    assert_eq!(
        (&ours["name"], &ours["device_count"]),
        (&json!("ours"), &json!(1))
    );
    let (_, dev) = server.call("GET", "/devices/wm_n1", &admin, None);
    assert_eq!(
        dev["tags"],
        json!([{"tag_key": "floor", "tag_value": "3"}]),
        "{dev}"
    );
}

#[test]
fn tags_bind_unbind_and_query() {
    let server = TestServer::start("io_uring", &json!({}), &["storage.max_tags_per_device=3"]);
    let admin = server.admin_key();
    register(&server, &admin, "wm", &["n1", "n2", "n3"]);
    let bind = |device: &str, tags: Value| {
        server.call(
            "POST",
            "/tags/bind-resource",
            &admin,
            Some(&json!({"resource_type": "device", "resource_id": device, "tags": tags})),
        )
    };
    let unbind = |device: &str, keys: Value| {
        server.call(
            "POST",
            "/tags/unbind-resource",
            &admin,
            Some(&json!({"resource_type": "device", "resource_id": device, "tag_keys": keys})),
        )
    };
    let tag = |k: &str, v: &str| json!({"tag_key": k, "tag_value": v});

    // Bind; binding an existing key replaces its value.
    let (status, t) = bind("wm_n1", json!([tag("floor", "3"), tag("zone", "a")]));
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        (&t["resource_type"], &t["resource_id"]),
        (&json!("device"), &json!("wm_n1"))
    );
    assert_eq!(t["tags"], json!([tag("floor", "3"), tag("zone", "a")]));
    let (status, _) = bind("wm_n2", json!([tag("floor", "3"), tag("zone", "b")]));
    assert_eq!(status, 200);
    let (status, _) = bind("wm_n3", json!([tag("floor", "4")]));
    assert_eq!(status, 200);
    let (status, t) = bind("wm_n1", json!([tag("floor", "5")]));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["tags"], json!([tag("floor", "5"), tag("zone", "a")]));
    let (_, dev) = server.call("GET", "/devices/wm_n1", &admin, None);
    assert_eq!(dev["tags"], t["tags"], "{dev}");

    // Query by one tag, by key only, and by several; pages of one agree.
    let q = |tags: Value| by_tags(&server, &admin, &tags, 50);
    assert_eq!(q(json!([tag("floor", "3")])), ["wm_n2"]);
    assert_eq!(
        q(json!([{"tag_key": "floor"}])),
        ["wm_n1", "wm_n2", "wm_n3"]
    );
    assert_eq!(q(json!([{"tag_key": "zone"}])), ["wm_n1", "wm_n2"]);
    assert_eq!(q(json!([tag("floor", "5"), tag("zone", "a")])), ["wm_n1"]);
    assert_eq!(
        q(json!([{"tag_key": "zone"}, tag("floor", "3")])),
        ["wm_n2"]
    );
    assert!(q(json!([tag("floor", "4"), {"tag_key": "zone"}])).is_empty());
    assert!(q(json!([tag("floor", "9")])).is_empty());
    assert_eq!(
        by_tags(&server, &admin, &json!([{"tag_key": "floor"}]), 1),
        ["wm_n1", "wm_n2", "wm_n3"]
    );
    assert_eq!(
        by_tags(
            &server,
            &admin,
            &json!([{"tag_key": "floor"}, {"tag_key": "zone"}]),
            1
        ),
        ["wm_n1", "wm_n2"]
    );
    assert_eq!(
        device_ids(&server, &admin, "/devices?tag_key=zone&tag_value=a"),
        ["wm_n1"]
    );

    // Unbind by key; keys the device does not carry are passed over.
    let (status, t) = unbind("wm_n1", json!(["zone", "colour"]));
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["tags"], json!([tag("floor", "5")]));
    let (status, t) = unbind("wm_n1", json!(["zone"]));
    assert_eq!((status, &t["tags"]), (200, &json!([tag("floor", "5")])));
    assert_eq!(q(json!([{"tag_key": "zone"}])), ["wm_n2"]);

    // At most storage.max_tags_per_device (3 here) tags per device.
    let limit = assert_error(
        "tags per device",
        bind("wm_n3", json!([tag("a", ""), tag("b", ""), tag("c", "")])),
        409,
    );
    assert_eq!(limit["error_code"], "FLEETGATE.LIMIT_EXCEEDED", "{limit}");
    let (_, dev) = server.call("GET", "/devices/wm_n3", &admin, None);
    assert_eq!(dev["tags"], json!([tag("floor", "4")]), "unchanged: {dev}");

    // Unknown devices answer 404; malformed calls 400, naming the field.
    assert_error(
        "unknown device",
        bind("wm_nope", json!([tag("a", "b")])),
        404,
    );
    assert_error("unknown device", unbind("wm_nope", json!(["a"])), 404);
    assert_400_naming(
        "same key twice",
        bind("wm_n2", json!([tag("k", "1"), tag("k", "2")])),
        "tags[1]",
    );
    assert_400_naming("empty key", bind("wm_n2", json!([tag("", "1")])), "tags[0]");
    assert_400_naming(
        "control character",
        bind("wm_n2", json!([tag("k", "a\u{7}b")])),
        "tags[0]",
    );
    assert_400_naming("no tags", bind("wm_n2", json!([])), "tags");
    assert_400_naming(
        "misspelt tag field",
        bind("wm_n2", json!([{"tag_key": "k", "tag_vlaue": "v"}])),
        "tag_vlaue",
    );
    assert_400_naming("no keys", unbind("wm_n2", json!([])), "tag_keys");
    assert_400_naming(
        "keys of the wrong type",
        unbind("wm_n2", json!("k")),
        "tag_keys",
    );
    assert_400_naming(
        "another resource type",
        server.call(
            "POST",
            "/tags/bind-resource",
            &admin,
            Some(&json!({"resource_type": "product", "resource_id": "wm",
                         "tags": [tag("a", "b")]})),
        ),
        "resource_type",
    );
    assert_400_naming(
        "missing resource_id",
        server.call(
            "POST",
            "/tags/bind-resource",
            &admin,
            Some(&json!({"resource_type": "device", "tags": [tag("a", "b")]})),
        ),
        "resource_id",
    );
    assert_400_naming(
        "unknown field",
        server.call(
            "POST",
            "/tags/unbind-resource",
            &admin,
            Some(&json!({"resource_type": "device", "resource_id": "wm_n2",
                         "tag_keys": ["k"], "force": true})),
        ),
        "force",
    );
    assert_error(
        "truncated body",
        server.call_raw(
            "POST",
            "/tags/bind-resource",
            &admin,
            "application/json",
            Some("{\"resource_type\": \"dev"),
        ),
        400,
    );
    let query = |body: Value| server.call("POST", "/resources", &admin, Some(&body));
    assert_400_naming(
        "query without tags",
        query(json!({"resource_type": "device", "tags": []})),
        "tags",
    );
    assert_400_naming(
        "query tags of the wrong type",
        query(json!({"resource_type": "device", "tags": {"tag_key": "a"}})),
        "tags",
    );
    assert_400_naming(
        "query with a misspelt field",
        query(json!({"resource_type": "device", "tags": [{"key": "a"}]})),
        "key",
    );
    assert_400_naming(
        "query of another resource type",
        query(json!({"resource_type": "gateway", "tags": [{"tag_key": "a"}]})),
        "resource_type",
    );
    assert_error(
        "query limit 0",
        server.call(
            "POST",
            "/resources?limit=0",
            &admin,
            Some(&json!({"resource_type": "device", "tags": [{"tag_key": "a"}]})),
        ),
        400,
    );
    assert_error(
        "query not JSON",
        server.call_raw("POST", "/resources", &admin, "text/plain", Some("floor=3")),
        415,
    );
}
