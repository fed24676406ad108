//! docker-compose.yml keeps every service hardened: read-only, no capabilities beyond
//! what it names, no privilege gain, bounded processes, open files and memory, and every
//! image (and the Dockerfile's base images) pinned by digest.

use yaml_rust2::{Yaml, YamlLoader};

/// `key` of a service, looked up through its `<<` merges (aliases are already resolved).
fn lookup<'a>(service: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    let own = &service[key];
    if !own.is_badvalue() {
        return Some(own);
    }
    match &service["<<"] {
        Yaml::Hash(_) => lookup(&service["<<"], key),
        Yaml::Array(merged) => merged.iter().find_map(|m| lookup(m, key)),
        _ => None,
    }
}

#[test]
fn every_compose_service_is_hardened_and_bounded() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let services = docs[0]["services"].as_hash().expect("services");
    assert!(services.len() >= 4, "{services:?}");
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let get = |key: &str| lookup(service, key).unwrap_or_else(|| panic!("{name} has no {key}"));
        assert_eq!(get("read_only").as_bool(), Some(true), "{name}");
        assert!(
            get("cap_drop")
                .as_vec()
                .unwrap()
                .contains(&Yaml::String("ALL".into())),
            "{name}"
        );
        assert!(
            get("security_opt")
                .as_vec()
                .unwrap()
                .contains(&Yaml::String("no-new-privileges:true".into())),
            "{name}"
        );
        assert!(get("pids_limit").as_i64().is_some_and(|n| n > 0), "{name}");
        let nofile = &get("ulimits")["nofile"];
        let (soft, hard) = (nofile["soft"].as_i64(), nofile["hard"].as_i64());
        assert!(
            soft.is_some_and(|s| s >= 1024) && soft <= hard,
            "{name}: nofile {soft:?}/{hard:?}"
        );
        let memory = lookup(service, "mem_limit")
            .or_else(|| lookup(service, "deploy").map(|d| &d["resources"]["limits"]["memory"]));
        assert!(
            memory.is_some_and(|m| m.as_str().is_some()),
            "{name} has no memory limit"
        );
        let image = get("image").as_str().unwrap();
        assert!(
            image.contains("@sha256:") || image.starts_with("tokenvend:"),
            "{name}: {image} is not pinned by digest"
        );
    }
    // Jaeger has no entry point that needs root.
    assert_eq!(
        services[&Yaml::String("jaeger".into())]["user"].as_str(),
        Some("10001:10001")
    );
}

#[test]
fn every_base_image_of_the_dockerfile_is_pinned_by_digest() {
    let dockerfile = include_str!("../../Dockerfile");
    let bases: Vec<&str> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("FROM "))
        .collect();
    assert_eq!(
        bases.len(),
        2,
        "a build stage and a runtime stage: {bases:?}"
    );
    for base in bases {
        let image = base.split_whitespace().next().unwrap_or_default();
        let digest = image.split_once("@sha256:").map(|(_, d)| d);
        assert!(
            digest.is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())),
            "FROM {image} is not pinned by digest"
        );
    }
}
