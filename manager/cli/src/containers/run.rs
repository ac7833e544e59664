//! `run` and `create`: pull the image if needed, create the container,
//! and for `run` start it, attached unless -d.

use anyhow::Result;
use berth_proto::manager::v1 as pb;

use super::request::RunArgs;
use super::start::{create_task, start_task};
use crate::{rpc, Client};

/// Makes sure the image is here, pulling it (with progress) as docker does.
async fn ensure_image(c: &Client, image: &str) -> Result<()> {
    match c
        .images()
        .get(pb::GetImageRequest {
            name: image.to_owned(),
        })
        .await
    {
        Ok(i) if i.get_ref().unpacked => Ok(()),
        Ok(_) => crate::images::pull_quiet(c, image).await,
        Err(e) if e.code() == tonic::Code::NotFound => {
            eprintln!("Unable to find image '{image}' locally");
            crate::images::pull_quiet(c, image).await
        }
        Err(e) => Err(rpc(e)),
    }
}

/// Pulls the image if needed and creates the container record; returns
/// its id. Shared by `create` and `run`.
async fn create_container(c: &Client, a: &RunArgs) -> Result<String> {
    ensure_image(c, a.image()).await?;
    let request = a.request()?;
    let id = request.id.clone();
    c.containers().create(request).await.map_err(rpc)?;
    Ok(id)
}

pub async fn create(c: &Client, a: RunArgs) -> Result<()> {
    println!("{}", create_container(c, &a).await?);
    Ok(())
}

pub async fn run(c: &Client, a: RunArgs) -> Result<i32> {
    let id = create_container(c, &a).await?;
    // Detached, nothing attaches before the start: create and start in one
    // call.
    if let Err(e) = create_task(c, &id, a.detach).await {
        let _ = c
            .containers()
            .delete(pb::DeleteContainerRequest { id: id.clone() })
            .await;
        return Err(e);
    }
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let session = a.session.session();
    let _raw = session.raw_mode();
    start_task(c, &id, Some(&session), a.rm).await
}
