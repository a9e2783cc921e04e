"""Our client for the Fireworks fine-tuning checkpoint surface (the real service or fwemu).

    ControlPlaneClient    client.control_plane   jobs, checkpoint rows, promotion, models (/v1)
    TrainerGatewayClient  client.trainer_client  sessions and models over the futures protocol
    TrainingCheckpoints   client.checkpoints     save / resume / promote_latest + dataloader.json
    sft_loop              client.recipes.sft_loop  Config + main(cfg): train, resume, promote

Both clients are synchronous and take any httpx transport; an async one such as
`httpx.ASGITransport(create_app(settings))` is bridged automatically (client.transport), so
the same code runs in-process in tests and over the network against a server.
"""
