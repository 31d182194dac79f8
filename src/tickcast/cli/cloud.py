"""``tickcast deploy-cloud/destroy-cloud``: the Azure environment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tickcast.cli._app import (
    _settings,
    app,
    console,
    err_console,
)
from tickcast.settings import Settings

Env = Annotated[
    str | None, typer.Option("--env", help="dev, test or prod (default TICKCAST_CLOUD_DEPLOY__ENV, else dev)")
]


Subscription = Annotated[
    str | None, typer.Option("--subscription", help="subscription ID (default: settings, else `az account show`)")
]


ResourceGroup = Annotated[str | None, typer.Option("--resource-group", help="resource group (default tickcast-<env>)")]


def _cloud_settings(settings: Settings, **overrides: object) -> Settings:
    """``settings`` with the deploy command's options applied to the ``cloud_deploy`` group (validated)."""
    from tickcast.settings import CloudDeploySettings

    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return settings
    try:
        group = CloudDeploySettings.model_validate({**settings.cloud_deploy.model_dump(exclude_unset=True), **given})
    except ValueError as err:
        err_console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from None
    return settings.model_copy(update={"cloud_deploy": group})


@app.command("deploy-cloud")
def deploy_cloud(
    env: Env = None,
    what_if: Annotated[bool, typer.Option("--what-if", help="show what would change, change nothing")] = False,
    outputs_only: Annotated[
        bool, typer.Option("--outputs-only", help="only re-read the last deployment's outputs into the dotenv file")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="wait again for the last deployment (after a lost login) and write its outputs"),
    ] = False,
    parameters_out: Annotated[
        Path | None,
        typer.Option(help="only write the assembled parameter file here (for PSRule / arm-ttk), offline"),
    ] = None,
    subscription: Subscription = None,
    resource_group: ResourceGroup = None,
    location: Annotated[str | None, typer.Option(help="Azure region (default TICKCAST_CLOUD_DEPLOY__LOCATION)")] = None,
    ssh_public_key: Annotated[Path | None, typer.Option(help="OpenSSH public key file for the VMs")] = None,
    apim_publisher_email: Annotated[str | None, typer.Option(help="API Management publisher email")] = None,
    apim_publisher_name: Annotated[str | None, typer.Option(help="API Management publisher name")] = None,
) -> None:
    """Deploy cloud/arm/main.json to Azure (incremental); write the outputs to .tickcast/cloud/<env>.env."""
    from tickcast.cloud_deploy import CloudDeployer, CloudDeployError, OperationStatus

    settings = _cloud_settings(
        _settings(),
        env=env,
        subscription_id=subscription,
        resource_group=resource_group,
        location=location,
        ssh_public_key_path=ssh_public_key,
        apim_publisher_email=apim_publisher_email,
        apim_publisher_name=apim_publisher_name,
    )
    t0 = time.monotonic()

    def progress(op: OperationStatus) -> None:
        colour = {"succeeded": "green", "failed": "red"}.get(op.state.lower(), "dim")
        took = f" ({op.duration})" if op.duration and op.finished else ""
        console.print(f"  [{colour}]{op.state:<10}[/{colour}] {op.resource}{took}", highlight=False)
        if op.error:
            err_console.print(f"    [red]{op.error}[/red]", highlight=False)

    deployer = CloudDeployer(settings, progress=progress)
    try:
        if parameters_out is not None:
            console.print(f"wrote {deployer.write_parameters(parameters_out)}")
            return
        if outputs_only:
            deployer.login()
            outputs, env_file, _, missing = deployer.fetch_outputs()
        elif resume:
            deployer.login()
            with console.status(f"waiting for deployment {deployer.deployment_name} ..."):
                result = deployer.resume()
            outputs, env_file, missing = result.outputs, result.env_file, result.missing_outputs
        else:
            plan = deployer.plan()
            deployer.login()
            where = f"{plan.resource_group} ({plan.location}, subscription {plan.subscription_id})"
            if what_if:
                console.print(f"[bold]what-if[/bold] of {plan.deployment_name} in {where}")
                with console.status("asking Azure Resource Manager what would change ..."):
                    text = deployer.what_if(plan)
                console.print(text, markup=False, highlight=False)
                console.print("nothing was changed (what-if)")
                return
            console.print(f"[bold]deploying[/bold] {plan.deployment_name} to {where} (incremental)")
            with console.status("deploying (AKS and API Management take 20-45 minutes) ..."):
                result = deployer.deploy(plan)
            if result.created_resource_group:
                console.print(f"created resource group {plan.resource_group}")
            outputs, env_file, missing = result.outputs, result.env_file, result.missing_outputs
    except CloudDeployError as err:
        err_console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(1) from None
    table = Table(title="ARM outputs")
    table.add_column("output")
    table.add_column("value", overflow="fold")
    for name, value in sorted(outputs.items()):
        table.add_row(name, str(value))
    console.print(table)
    for name in missing:
        err_console.print(f"[yellow]the template has no output {name}: its setting was not written[/yellow]")
    console.print(
        f"done in {time.monotonic() - t0:.0f}s; settings for profile cloud in {env_file}\n"
        f"  use them: set -a; . {env_file}; set +a",
        highlight=False,
    )


@app.command("destroy-cloud")
def destroy_cloud(
    env: Env = None,
    subscription: Subscription = None,
    resource_group: ResourceGroup = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask to type the resource group's name")] = False,
) -> None:
    """Delete the environment's resource group and everything in it (asks to type its name first)."""
    from tickcast.cloud_deploy import CloudDeployer, CloudDeployError

    settings = _cloud_settings(_settings(), env=env, subscription_id=subscription, resource_group=resource_group)
    deployer = CloudDeployer(settings)
    try:
        deployer.login()
        group, sub = deployer.resource_group, deployer.subscription_id
        if not deployer.resource_group_exists():
            console.print(f"resource group {group} does not exist in subscription {sub}: nothing to delete")
            return
        if not yes:
            typed = typer.prompt(f"this deletes resource group {group} in subscription {sub}; type its name")
            if typed.strip() != group:
                err_console.print("[red]the name did not match: nothing was deleted[/red]")
                raise typer.Exit(1)
        t0 = time.monotonic()
        with console.status(f"purging the AML workspace, then deleting resource group {group} (10-30 minutes) ..."):
            report = deployer.destroy()
    except CloudDeployError as err:
        err_console.print(f"[red]{err}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"deleted resource group {group} in {time.monotonic() - t0:.0f}s")
    for line in report.purged if report else []:
        console.print(f"  purged: {line}", highlight=False)
    for line in report.remaining if report else []:
        console.print(f"  remains: {line}", highlight=False)
