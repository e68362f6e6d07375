//! The core's API over real HTTP.

use aegis_base::Shutdown;

#[tokio::test]
async fn health_names_the_role_and_the_schemas_it_ingests_then_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(aegis_fleet::serve(listener, shutdown.clone()));
    let health: serde_json::Value = reqwest::get(format!("http://{addr}/api/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["role"], "core");
    assert_eq!(health["event_schemas"][0], "aegis.event.v1");
    let missing = reqwest::get(format!("http://{addr}/api/nothing"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    shutdown.trigger();
    server.await.unwrap().unwrap();
}
